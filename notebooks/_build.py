"""Generate the teaching notebooks from the cell sources below: ``python notebooks/_build.py [--check]``.

Each notebook is a list of ``(kind, source)`` cells: ``"md"`` (markdown), ``"code"``, or ``"params"`` (the code cell
tagged ``parameters``, which ``python -m ibwidget._export -p NAME=VALUE`` and the tests override). The .ipynb files
are written without outputs, with stable cell ids, so a regenerated notebook only differs where its source did.
``--check`` exits 1 when a notebook on disk differs from what this script would write.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# ------------------------------------------------------------------------------------------------ shared snippets

LOAD_DIGITS = """
train, val, test = getattr(ib.datasets, DATASET).load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
x0, _ = next(iter(train))
INPUT_SHAPE = tuple(x0.shape[1:])
print(f"{DATASET}: {len(train.dataset)} training and {len(val.dataset)} validation images of shape {INPUT_SHAPE}")
"""

TABLE_HELPER = '''
def table(run, estimator="hsic", sigma=SIGMA, target="labels", sigma_rule="fixed"):
    """Print each layer's (dependence on X, dependence on Y) at every recorded epoch, with the validation accuracy."""
    traj = run.trajectories(estimator, sigma=sigma, target=target, sigma_rule=sigma_rule)
    spec = ib.estimators.get(estimator)
    print(f"{run.name}: {spec.axis_label('T', 'X')}  /  {spec.axis_label('T', 'Y')}   (sigma={sigma}, {sigma_rule}, "
          f"Y={target}, probe of {run.m})")
    print("epoch  val_acc  " + "".join(f"{name:>22}" for name in run.layer_names))
    for row, epoch in enumerate(run.epochs):
        acc = run.history["val_accuracy"][epoch - 1] if epoch > 0 else float("nan")
        cells = "".join(f"{traj[row, i, 0]:>11.4g}{traj[row, i, 1]:>11.4g}" for i in range(len(run.layer_names)))
        print(f"{epoch:>5}  {acc:>7.3f}  {cells}")
    return traj
'''

# ------------------------------------------------------------------------------------------------ 01

NB01 = [
    (
        "md",
        """
        # Training dynamics in the information plane, measured with HSIC

        This notebook rebuilds PyGlow's tutorial *Analysing training dynamics using HSIC criterion* on **ibwidget**.
        We train the tutorial's network (Conv2d(16) → Flatten → Dense 1000 / 500 / 200 → Dense 10, SGD, batch 64)
        and watch, **live**, how every layer's representation moves in the *information plane* while it learns.
        Afterwards we read the trajectories — is there a *fitting* phase, a *compression* phase? — save the run and
        open it again.

        It runs anywhere: on **MNIST** when its files (or the network) are available, otherwise on the offline
        **digits** data that ships with scikit-learn (the output below says which); on a **CUDA** GPU when there is
        one, else on the CPU. The default settings are small so that the whole notebook runs in under a minute on
        a laptop; the parameter cell says how to use the tutorial's full settings.
        """,
    ),
    (
        "md",
        """
        ## 1. The information plane

        A feed-forward network is a chain: the input $X$ goes through layer after layer, each producing a new
        *representation* $T_1, T_2, \\dots$ (the layer's output), and the last one predicts the label $Y$. For each
        layer we ask two questions:

        * **How much does $T$ still depend on the input $X$?** (x-axis: *complexity* of the representation)
        * **How much does $T$ depend on the label $Y$?** (y-axis: how *relevant* — useful for generalisation — it is)

        Every epoch gives one point per layer, so training draws one trajectory per layer. Tishby and co-authors
        measured both axes with mutual information, $I(T;X)$ and $I(T;Y)$ (Tishby & Zaslavsky 2015; Shwartz-Ziv &
        Tishby 2017, *Opening the black box of deep neural networks via information*). They reported two phases:
        first the layers **fit** (both quantities grow: up and to the right), then they **compress** (dependence on
        $X$ falls while dependence on $Y$ stays: to the left) — the network forgets input details the label does not
        need. Mutual information is hard to estimate for continuous, deterministic networks, so, like the tutorial,
        we use a kernel dependence measure instead and keep the name "information plane" even though HSIC is not an
        information quantity.
        """,
    ),
    (
        "md",
        """
        ## 2. What HSIC measures

        Take $m$ samples. For the representation $T$ build the $m \\times m$ *kernel matrix*
        $K_{ij} = k(t_i, t_j)$, a similarity between samples $i$ and $j$; here the Gaussian kernel
        $k(t, t') = \\exp\\left(-\\lVert t - t' \\rVert^2 / 2\\sigma^2\\right)$. Build $L$ the same way for the other
        variable ($X$, or $Y$). The **Hilbert–Schmidt Independence Criterion** (Gretton et al. 2005) is

        $$\\mathrm{HSIC}(T, Y) = \\frac{1}{(m-1)^2}\\,\\operatorname{tr}(K H L H),
        \\qquad H = I - \\tfrac{1}{m}\\mathbf{1}\\mathbf{1}^\\top .$$

        $H$ centres the kernels; the trace then adds up, over all pairs of samples, "are these two similar in $T$"
        times "are they similar in $Y$". It is large when samples that look alike to the layer also share a label,
        and (for a Gaussian kernel, with enough samples) zero exactly when $T$ and $Y$ are independent. It is a
        *dependence* measure, not an amount of information: its scale depends on the kernel, on $\\sigma$ and on the
        normaliser (PyGlow divided by $m-1$ instead of $(m-1)^2$, so its values are $m-1$ times larger).
        The HSIC-bottleneck paper (Ma, Lewis & Kleijn 2020) trains networks with these quantities directly.
        """,
    ),
    (
        "md",
        """
        ## 3. Why a probe set

        PyGlow computed HSIC on every training batch, in training mode, and averaged. ibwidget instead keeps a
        fixed, seeded **probe**: a subset of the validation data (`probe=` samples). After every epoch (and once
        before training: epoch 0) the network runs on the probe in evaluation mode and ibwidget stores each layer's
        Gram matrix $G = TT^\\top$ of the probe. Three consequences:

        * every point of a trajectory is measured on *the same* samples, so epochs are comparable;
        * evaluation mode means no dropout noise and fixed batch-norm statistics in the measurement;
        * all the estimators in this project need only these Gram matrices, so **the estimator, $\\sigma$ and the
          target can be changed after training**, for every recorded epoch, without retraining. Try it with the
          widget's controls below.

        The price: memory grows with $m^2$ per layer and epoch, and a probe of $m$ samples gives estimates whose
        noise shrinks like $1/\\sqrt{m}$.
        """,
    ),
    (
        "md",
        """
        ## 4. Parameters

        The tutorial's full settings are `EPOCHS = 7`, `PROBE = 512`, `DATASET = "mnist"` (7 epochs of MNIST's
        750 batches; expect several minutes per epoch on a CPU, seconds on a GPU). The digits data has only 18
        batches of 64 per epoch, so we train for more epochs on it.
        """,
    ),
    (
        "params",
        """
        EPOCHS = 12  # seed tutorial: 7 (on MNIST)
        BATCH_SIZE = 64  # seed tutorial: 64
        PROBE = 256  # probe samples; seed settings: 512 (PyGlow used every training batch instead)
        SIGMA = 5.0  # Gaussian kernel width for T, X (and the output) under the "fixed" rule; seed tutorial: 5
        SIGMA_RULE = "median_d2"  # the widgets open on it: sigma^2 = median squared distance, per layer and epoch;
        # "fixed": SIGMA for every layer, as in the seed tutorial (too small for its wide layers: see section 7)
        LR = 0.01  # SGD learning rate (momentum 0.9)
        DATASET = "auto"  # "auto": MNIST if its files or the network are there, else digits; or "mnist", "digits"
        DOWNLOAD_MNIST = True  # try to download MNIST when its files are missing (fails fast without a network)
        DEVICE = "auto"  # "auto": CUDA when present, else the CPU
        SEED = 0
        """,
    ),
    (
        "code",
        """
        import numpy as np
        import torch

        import ibwidget as ib
        from ibwidget.information_bottleneck.estimator import HSIC
        from ibwidget.layers import Conv2d, Dense, Flatten

        torch.manual_seed(SEED)
        print(f"ibwidget {ib.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
        """,
    ),
    (
        "md",
        """
        ## 5. The data

        MNIST has 70,000 handwritten digits of 28×28 pixels. When its files are not on this machine and cannot be
        downloaded, we fall back to scikit-learn's **digits**: 1,797 real handwritten digits of 8×8 pixels, the
        same task at a smaller scale. 20% of the training images are held out for validation; the probe is drawn
        from them.
        """,
    ),
    (
        "code",
        """
        def load(dataset):
            \"\"\"(name, train, val): MNIST when possible (dataset "auto" or "mnist"), else the offline digits.\"\"\"
            if dataset in ("auto", "mnist"):
                try:
                    train, val, _ = ib.datasets.mnist.load_data(
                        BATCH_SIZE, validation_split=0.2, download=DOWNLOAD_MNIST, seed=SEED
                    )
                    return "MNIST", train, val
                except (ib.datasets.DatasetNotFoundError, FileNotFoundError) as err:
                    if dataset == "mnist":
                        raise
                    where = ib.datasets.default_root() / "MNIST" / "raw"
                    how = "no network to download them" if DOWNLOAD_MNIST else "download switched off"
                    print(f"MNIST is not available here: no files in {where} and {how} ({type(err).__name__}).")
            train, val, _ = ib.datasets.digits.load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
            return "digits", train, val


        DATA_NAME, train, val = load(DATASET)
        x0, _ = next(iter(train))
        INPUT_SHAPE = tuple(x0.shape[1:])
        what = "MNIST" if DATA_NAME == "MNIST" else "the offline digits data (scikit-learn, 8x8 pixels)"
        print(f"Using {what}: {len(train.dataset)} training and {len(val.dataset)} validation images, "
              f"input shape {INPUT_SHAPE}")
        """,
    ),
    (
        "md",
        """
        ## 6. The model

        The tutorial's network, layer for layer, with one deliberate change: the last layer returns **logits**
        (`Dense(10)` without softmax), because the cross-entropy loss applies the softmax itself. PyGlow's
        `Dense(10, activation='softmax')` with `cross_entropy` applied it twice, which flattened the loss (ibwidget
        warns and skips the second softmax if you write it that way).

        We also attach PyGlow's HSIC evaluator, exactly as the tutorial does, so `model.evaluated_dynamics` will hold
        PyGlow's array. ibwidget tracks every layer with parameters — the convolution and the four dense layers —
        so we get the tutorial's five trajectories.
        """,
    ),
    (
        "code",
        """
        model = ib.IBSequential(input_shape=INPUT_SHAPE, device=DEVICE, name=f"seed model on {DATA_NAME}")
        model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
        model.add(Flatten())
        model.add(Dense(1000, activation="relu"))
        model.add(Dense(500, activation="relu"))
        model.add(Dense(200, activation="relu"))
        model.add(Dense(10))  # logits: the loss applies the softmax
        model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=LR, momentum=0.9)
        model.attach_evaluator(HSIC(kernel="gaussian", gpu=torch.cuda.is_available(), sigma=SIGMA))
        print("device:", model.device, "| tracked layers:", model.tracked_layer_names)
        """,
    ),
    (
        "md",
        """
        ## 7. Train and watch

        The `Trainer` widget trains in a background thread. From top to bottom:

        * **run bar** — Start / Pause / Stop, the epoch, a progress bar with speed and time left, the device, the
          status;
        * **layer toggles** — one per tracked layer, in its plot colour: click to hide or show a trajectory;
        * **estimator**, **σ** (log slider) and **σ rule**, **target Y** (true labels, or the network's own output as
          PyGlow used) — changing any of them redraws every recorded epoch at once, even during training; the
          *kernel saturation* gauge beside them tells whether σ is sensible (more in notebook 03 and below);
        * **figures** — the information plane (one line per layer, points coloured by epoch: hover for values),
          the dependence on X and on Y against the epoch (the tutorial's second set of plots), loss and accuracy.

        **Which σ?** The widget opens on the **median rule** (`SIGMA_RULE = "median_d2"`): for every layer and epoch
        σ² is the median squared distance between probe samples, so the kernel always sees some pairs as close and
        some as far — the gauge reads about 0.6. The tutorial's choice, a **fixed σ = 5** for every layer, is one
        click away: choose `fixed` as the σ rule (the slider holds 5). The gauge then falls from about 0.8 before
        training to about 0.03 — *σ too small* — by the end (on digits): training spreads the probe samples about
        20 units apart in every layer (before training, from 11 in the convolution down to 0.03 at the output), so
        at σ = 5 every pair looks unrelated and the kernel matrix is almost the identity, whatever the layer
        learned. One σ for all layers and epochs cannot suit distances that change this much; the median rule
        follows them. The cell after training prints both readings per layer.

        The next cell displays the widget; the one after starts training and waits for the end (`wait()` blocks
        this notebook until training ends; leave it out to keep working while the model trains — the buttons work
        either way).
        """,
    ),
    (
        "code",
        """
        trainer = ib.Trainer(
            model, train, val, epochs=EPOCHS, probe=PROBE, sigma=SIGMA, sigma_rule=SIGMA_RULE,
            estimators=("hsic", "hsic_pyglow", "cka"), seed=SEED,
        )
        trainer
        """,
    ),
    (
        "code",
        """
        trainer.start()
        run = trainer.wait()
        print(f"{trainer.status}: {len(run.epochs) - 1} epochs, final validation accuracy "
              f"{run.history['val_accuracy'][-1]:.3f}")
        """,
    ),
    (
        "code",
        """
        # The gauge's reading (mean off-diagonal kernel value; informative between about 0.05 and 0.9), per layer
        print(f"{'sigma':>24}  {'epoch':>5}  " + "".join(f"{name:>10}" for name in run.layer_names))
        for rule, what in ((SIGMA_RULE, f"{SIGMA_RULE} (widget)"), ("fixed", f"fixed {SIGMA:g} (tutorial)")):
            saturation = run.saturation(SIGMA, rule)
            for row in (0, -1):
                cells = "".join(f"{value:>10.3f}" for value in saturation[row])
                print(f"{what:>24}  {run.epochs[row]:>5}  {cells}")
        """,
    ),
    (
        "md",
        """
        ## 8. The numbers behind the plot

        `run.trajectories(estimator, sigma=..., target=...)` returns an array of shape (epochs + 1, layers, 2):
        `[..., 0]` is each layer's dependence on X, `[..., 1]` on Y. Here it is as a table (epoch 0 is the untrained
        network), with the tutorial's fixed σ = 5 as in its plots.
        """,
    ),
    ("code", (TABLE_HELPER, 'traj = table(run, "hsic")\nprint("\\narray shape:", traj.shape)')),
    (
        "md",
        """
        PyGlow's own layout is still there: `model.evaluated_dynamics` has shape (epochs, batches, evaluators,
        layers, 2) — with one "batch" (the probe) per epoch — and the tutorial's `np.mean(..., 1)` gives
        (epochs, evaluators, layers, 2). Its values are PyGlow's: HSIC with the $1/(m-1)$ normaliser, measured
        against the **network's output**, not the labels.
        """,
    ),
    (
        "code",
        """
        evaluated_dynamics = np.mean(model.evaluated_dynamics, 1)  # averaged over batches, as in the tutorial
        print(evaluated_dynamics.shape)
        """,
    ),
    (
        "md",
        """
        ## 9. Reading the plane: fitting and compression

        The tutorial's reading: the first layers at once gain dependence on $Y$ while their dependence on $X$ drops;
        the later layers show two phases — a fast **fitting** (generalisation) phase in which both grow, then a
        **compression** phase in which HSIC(T, X) falls. In its run without regularisation the last layers kept
        increasing their complexity while their HSIC(T, Y) fell back. The cell below looks for these phases in our
        run: for each layer, the epoch at which HSIC(T, X) peaked and how much it fell afterwards.
        """,
    ),
    (
        "code",
        """
        for i, name in enumerate(run.layer_names):
            x, y = traj[:, i, 0], traj[:, i, 1]
            peak = int(np.argmax(x))
            drop = (x[peak] - x[-1]) / x[peak] if x[peak] > 0 else 0.0
            phase = "fitting, then compression" if 0 < peak < len(x) - 1 and drop > 0.02 else (
                "still fitting (HSIC(T,X) rising at the end)" if peak == len(x) - 1 else "no clear compression")
            print(f"{name:>9}: HSIC(T,X) peaks at epoch {run.epochs[peak]:>2} and then falls {100 * drop:4.1f}%; "
                  f"HSIC(T,Y) {y[0]:.4f} -> {y[-1]:.4f}: {phase}")
        """,
    ),
    (
        "md",
        """
        **Be careful with conclusions.** Whether a compression phase appears depends on more than the network:

        * on the **activation** — Saxe et al. (2018, *On the information bottleneck theory of deep learning*) found
          compression with saturating tanh units but not with ReLU, and traced much of it to the estimator;
        * on the **estimator and its normaliser** (HSIC, CKA, mutual-information estimates…), on **σ** (a too small or
          too large width makes every layer look alike) and on the **target** (labels or the network's output) —
          notebook 03 shows the same run under each choice;
        * on the **probe**, the data set, the number of epochs and the random seed.

        Use the widget's controls now: choose the `fixed` σ rule and set σ to 0.5 or 50, switch the target to
        `output` (PyGlow's choice) or the estimator to `cka`, and watch whether the phases survive.
        """,
    ),
    (
        "md",
        """
        ## 10. Save the run and look at it again

        A run file (`.ibrun`) holds the configuration, the history and every epoch's snapshot (no pickle). `RunView`
        shows saved runs with the same figures and controls — give it several runs to compare them, as notebook 02
        does.
        """,
    ),
    (
        "code",
        """
        from pathlib import Path

        Path("runs").mkdir(exist_ok=True)
        path = run.save(f"runs/01_seed_{DATA_NAME.lower()}.ibrun")
        print(f"Saved the run to {path} ({path.stat().st_size / 1e6:.1f} MB)")
        saved = ib.load_run(path)
        print(saved)
        ib.RunView(saved, estimators=("hsic", "hsic_pyglow", "cka"), sigma=SIGMA, sigma_rule=SIGMA_RULE)
        """,
    ),
    (
        "md",
        """
        ## What next

        * **02_dropout_and_regularization** — the tutorial's "future work": train with and without dropout and
          compare the trajectories.
        * **03_estimators_and_sigma** — the same run under HSIC, CKA, nHSIC, Rényi and KDE mutual information; σ too
          small and too large; labels versus the output as Y.
        * **04_custom_estimator** — register your own dependence measure and find it in the widget.
        * **05_any_pytorch_model** — track the layers of any `nn.Module` by name.

        References: Gretton et al. 2005 (HSIC); Tishby & Zaslavsky 2015; Shwartz-Ziv & Tishby 2017; Saxe et al.
        2018; Ma, Lewis & Kleijn 2020 (HSIC bottleneck); Kornblith et al. 2019 (CKA).
        """,
    ),
]

# ------------------------------------------------------------------------------------------------ 02

NB02 = [
    (
        "md",
        """
        # Does regularisation change the trajectories? Dropout and weight decay

        The seed tutorial ends with *future work*: "try using some regularization like dropout and observe the
        information plane trajectory". Its run without regularisation showed the later layers *increasing* their
        dependence on the input while their dependence on the label fell back — the signature of a network that
        memorises. Here we train the same network three times, identically except for the regularisation, and
        overlay the three runs in one `RunView`:

        * **none** — the tutorial's setting;
        * **dropout** (Srivastava et al. 2014) — each hidden unit is zeroed with probability `DROPOUT` during
          training, so no unit can rely on exact input details; *information dropout* (Achille & Soatto 2018)
          makes the link to the information bottleneck explicit;
        * **weight decay** — an L2 penalty on the weights (`weight_decay` in the optimizer).

        The hypothesis to test: regularised layers keep less dependence on X (move left in the plane) for the same
        or better dependence on Y.
        """,
    ),
    (
        "params",
        """
        EPOCHS = 12  # per run; the seed tutorial trained 7 epochs of MNIST
        BATCH_SIZE = 64  # seed tutorial: 64
        PROBE = 256  # seed settings: 512
        SIGMA = 5.0  # seed tutorial: 5
        LR = 0.01  # SGD with momentum 0.9
        DROPOUT = 0.5  # dropout probability after each hidden Dense layer
        WEIGHT_DECAY = 5e-4  # L2 penalty of the third run
        DATASET = "digits"  # offline; "mnist" needs its files or the network
        DEVICE = "auto"  # CUDA when present
        SEED = 0
        """,
    ),
    (
        "code",
        """
        import torch

        import ibwidget as ib
        from ibwidget.layers import Conv2d, Dense, Dropout, Flatten
        """,
        LOAD_DIGITS,
    ),
    (
        "md",
        """
        ## Three runs

        Every run starts from the same initial weights (same random seed), sees the batches in the same order and
        is measured on the same probe, so the only difference is the regulariser. Note that dropout is active only
        while training: the probe is evaluated in evaluation mode, so the trajectories describe the deterministic
        network that the dropout-trained weights define. We train without a live widget here
        (`fit_generator(..., progress=False)`); each run takes a few seconds on a CPU.
        """,
    ),
    (
        "code",
        """
        def seed_network(name, dropout=0.0):
            \"\"\"The tutorial's network, with optional dropout after each hidden Dense layer.\"\"\"
            torch.manual_seed(SEED)  # the same initial weights for every run
            model = ib.IBSequential(input_shape=INPUT_SHAPE, device=DEVICE, name=name)
            model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
            model.add(Flatten())
            for width in (1000, 500, 200):
                model.add(Dense(width, activation="relu"))
                if dropout:
                    model.add(Dropout(dropout))
            model.add(Dense(10))
            return model


        variants = [
            ("no regularisation", 0.0, 0.0),
            (f"dropout {DROPOUT}", DROPOUT, 0.0),
            (f"weight decay {WEIGHT_DECAY:g}", 0.0, WEIGHT_DECAY),
        ]
        runs = []
        for name, dropout, weight_decay in variants:
            model = seed_network(name, dropout)
            model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=LR, momentum=0.9,
                          weight_decay=weight_decay)
            model.fit_generator(train, val, EPOCHS, probe=PROBE, seed=SEED, progress=False)
            run = model.run
            runs.append(run)
            h = run.history
            print(f"{name:>20}: train acc {h['accuracy'][-1]:.3f}, val acc {h['val_accuracy'][-1]:.3f}, "
                  f"val loss {h['val_loss'][-1]:.3f}  (layers {run.layer_names})")
        """,
    ),
    (
        "md",
        """
        ## Compare them in one view

        `RunView` draws each run with its own line style (see the legend) and the layers in their colours. Hide
        layers with the toggles to compare one layer across runs, and change the estimator or σ: all three runs are
        re-estimated together.
        """,
    ),
    (
        "code",
        """
        view = ib.RunView(runs, estimators=("hsic", "cka"), sigma=SIGMA)
        view
        """,
    ),
    (
        "md",
        """
        ## The same comparison in numbers

        For each run and layer: where the layer ends up (HSIC with X and with Y at the last epoch), and how much its
        dependence on X fell from its peak — the size of a compression phase, if any.
        """,
    ),
    (
        "code",
        """
        def summary(estimator="hsic", sigma=SIGMA):
            spec = ib.estimators.get(estimator)
            print(f"{spec.axis_label('T', 'X')} / {spec.axis_label('T', 'Y')} at the last epoch, sigma={sigma}; "
                  "'fall' = drop of the dependence on X from its peak")
            print(f"{'layer':>9} " + "".join(f"{name:>34}" for name, _, _ in variants))
            trajs = [run.trajectories(estimator, sigma=sigma) for run in runs]
            for i, layer in enumerate(runs[0].layer_names):
                cells = ""
                for traj in trajs:
                    x, y = traj[:, i, 0], traj[:, i, 1]
                    fall = 100 * (x.max() - x[-1]) / x.max()
                    cells += f"{x[-1]:>11.4f} {y[-1]:>9.4f} fall {fall:4.1f}%"
                print(f"{layer:>9} {cells}")


        summary("hsic")
        print()
        summary("cka")

        plain, dropped = runs[0].trajectories("hsic", sigma=SIGMA), runs[1].trajectories("hsic", sigma=SIGMA)
        deep = runs[0].layer_names[-2]  # the last hidden layer
        i = runs[0].layer_names.index(deep)
        word = "less" if dropped[-1, i, 0] < plain[-1, i, 0] else "more"
        print(f"\\nIn this run, dropout left the last hidden layer ({deep}) with {word} dependence on X "
              f"({dropped[-1, i, 0]:.4f} vs {plain[-1, i, 0]:.4f}) and HSIC(T, Y) {dropped[-1, i, 1]:.4f} vs "
              f"{plain[-1, i, 1]:.4f}.")
        """,
    ),
    (
        "md",
        """
        ## What to look for, and what not to conclude

        * **Left–right**: a regulariser that removes input detail should end with lower HSIC(T, X) in the deep
          layers, or show a larger fall from the peak.
        * **Up–down**: HSIC(T, Y) should not suffer — compare with the validation accuracy printed above.
        * **Which layers**: the first layers barely change between runs; differences, if any, show in the dense
          layers where dropout acts.

        On 1,437 small digits and a dozen epochs the differences are modest and can change with the seed: one run
        per setting is an anecdote, not evidence. Repeat with other `SEED` values, train longer, use
        `DATASET = "mnist"` with the tutorial's settings, and check that a conclusion survives another estimator
        (the CKA table above; notebook 03 for more).
        """,
    ),
]

# ------------------------------------------------------------------------------------------------ 03

NB03 = [
    (
        "md",
        """
        # Same run, different lenses: estimators, σ and the target

        An information-plane picture is a measurement, and every measurement has settings. Because ibwidget keeps
        each epoch's Gram matrices of the probe, we can train **once** and look at the same training under

        1. different **estimators**: HSIC with three normalisers, CKA, normalised HSIC, matrix-based Rényi mutual
           information and kernel-density (KDE) mutual-information bounds;
        2. different **kernel widths σ**, with the *saturation gauge* that tells a useful σ from a useless one;
        3. different **targets Y**: the true labels, or — as PyGlow did — the network's own output.

        The point of this notebook: conclusions such as "this layer compresses" can appear or disappear with these
        choices, so a plot should always say which ones it used.
        """,
    ),
    (
        "params",
        """
        EPOCHS = 12  # the seed tutorial trained 7 epochs of MNIST
        BATCH_SIZE = 64  # seed tutorial: 64
        PROBE = 128  # small: the Rényi estimator needs eigenvalues of m x m matrices; seed settings: 512
        SIGMA = 5.0  # seed tutorial: 5
        LR = 0.01
        DATASET = "digits"  # offline; "mnist" needs its files or the network
        DEVICE = "auto"  # CUDA when present
        SEED = 0
        """,
    ),
    (
        "code",
        """
        import numpy as np
        import torch

        import ibwidget as ib
        from ibwidget.cli import seed_model
        """,
        LOAD_DIGITS,
        """
        torch.manual_seed(SEED)
        model = seed_model(INPUT_SHAPE, device=DEVICE)  # the tutorial's network, ending in logits
        model.name = "seed model"
        model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=LR, momentum=0.9)
        model.fit_generator(train, val, EPOCHS, probe=PROBE, seed=SEED, progress=False)
        run = model.run
        print(run, "| final val acc", round(run.history["val_accuracy"][-1], 3))
        """,
    ),
    (
        "md",
        """
        ## 1. Estimators

        | name | what it computes | reference |
        |---|---|---|
        | `hsic` | $\\operatorname{tr}(KHLH)/(m-1)^2$, biased | Gretton et al. 2005 |
        | `hsic_unbiased` | unbiased HSIC (can be slightly negative) | Song et al. 2012 |
        | `hsic_pyglow` | $\\operatorname{tr}(KHLH)/(m-1)$: PyGlow's scale, $m-1$ times `hsic` | PyGlow 0.1.7 |
        | `cka` | centred kernel alignment: HSIC normalised to $[0, 1]$ | Cortes et al. 2012; Kornblith et al. 2019 |
        | `nhsic` | normalised HSIC with a small regulariser ε | Fukumizu et al. 2008; Ma et al. 2020 |
        | `renyi_mi` | matrix-based Rényi α-mutual information, bits | Sanchez Giraldo et al. 2015; Yu et al. 2019 |
        | `kde_upper`, `kde_lower` | pairwise KDE bounds, noise variance σ², bits | Kolchinsky & Tracey 2017 |

        The cell below computes every layer's trajectory under each of them (from the stored snapshots: no
        retraining) and reduces it to three readings a paper might report:

        * **X trend**: did the layer's dependence on X go up or down over training (last epoch vs. epoch 1)?
        * **compresses?**: did that dependence peak and then fall by more than 2%?
        * **deepest layer on top?**: is the last layer the most dependent on Y at the end?
        """,
    ),
    (
        "code",
        """
        ESTIMATORS = ["hsic", "hsic_unbiased", "hsic_pyglow", "cka", "nhsic", "renyi_mi", "kde_upper", "kde_lower"]


        def readings(traj):
            x = traj[:, :, 0]
            trend = "".join("↑" if x[-1, i] > x[1, i] else "↓" for i in range(x.shape[1]))
            falls = (x.max(0) - x[-1]) / np.abs(x.max(0)).clip(1e-12)
            peaked_early = x.argmax(0) < len(x) - 1
            compresses = "".join("C" if (f > 0.02 and early) else "." for f, early in zip(falls, peaked_early))
            top = "yes" if traj[-1, -1, 1] >= traj[-1, :, 1].max() - 1e-12 else "no"
            return trend, compresses, top


        print("layers:", run.layer_names, "| arrows and C/. per layer, first to last\\n")
        print(f"{'estimator':>14} {'X trend':>8} {'compresses?':>12} {'last on top?':>13}   "
              f"{'last layer at the end: vs X':>28} {'vs Y':>10}")
        results = {}
        for name in ESTIMATORS:
            traj = run.trajectories(name, sigma=SIGMA)
            results[name] = traj
            trend, comp, top = readings(traj)
            unit = ib.estimators.get(name).units or "-"
            x_end, y_end = traj[-1, -1]
            print(f"{name:>14} {trend:>8} {comp:>12} {top:>13}   {x_end:>22.4g} [{unit:>4}] {y_end:>9.4g}")

        ratio = results["hsic_pyglow"] / results["hsic"]
        print(f"\\nhsic_pyglow / hsic = {ratio.min():.2f} .. {ratio.max():.2f} (= m - 1 = {run.m - 1}): same shape, "
              "another scale")
        """,
    ),
    (
        "md",
        """
        What to notice:

        * the three HSIC variants draw the same *shapes* at different scales (and the unbiased one removes a small
          positive bias): never compare HSIC numbers between tools without the normaliser;
        * CKA divides by the kernels' own sizes; a layer whose kernel simply gets "bigger" (more spread) gains HSIC
          but not necessarily CKA, so trends can flip between the two;
        * the mutual-information estimators are in bits and are bounded by $\\log_2 m$ — with a probe of
          $m$ = 128 distinct inputs, $I(T;X)$ of a deterministic layer saturates near 7 bits, so "compression" of
          $I(T;X)$ often measures only how the estimator's noise or kernel width compares to the layer's scale
          (Saxe et al. 2018; Goldfeld et al. 2019).
        """,
    ),
    (
        "md",
        """
        ## 2. The kernel width σ and the saturation gauge

        The Gaussian kernel $\\exp(-d^2/2\\sigma^2)$ compares a distance $d$ between two samples with σ:

        * **σ far below the typical distance** → every off-diagonal kernel value is ≈ 0: each sample is similar only to
          itself, every layer looks like "all samples are different", and all trajectories collapse together;
        * **σ far above the typical distance** → every kernel value is ≈ 1: nothing can be told apart, HSIC → 0;
        * useful σ lie in between. The **saturation gauge** is the mean off-diagonal kernel value: near 0 or near 1
          means σ is too small or too large for that layer.

        A fixed σ = 5 (the tutorial's) suits some layers better than others — a 1000-unit layer has larger distances
        than a 10-unit one. The median rules (`sigma_rule="median_d2"`: σ² = median squared distance) adapt σ per
        layer and epoch.
        """,
    ),
    (
        "code",
        """
        print(f"{'sigma':>9} {'saturation per layer (last epoch)':>44}   {'HSIC(T,Y) per layer (last epoch)':>39}  "
              "compresses?")
        for sigma in (0.05, 0.5, 2.0, SIGMA, 20.0, 100.0, 1000.0):
            sat = run.saturation(sigma)[-1]
            traj = run.trajectories("hsic", sigma=sigma)
            _, comp, _ = readings(traj)
            print(f"{sigma:>9g} " + " ".join(f"{s:8.3f}" for s in sat) + "   "
                  + " ".join(f"{v:7.4f}" for v in traj[-1, :, 1]) + f"  {comp}")
        traj = run.trajectories("hsic", sigma_rule="median_d2")
        sat = run.saturation(sigma_rule="median_d2")[-1]
        print(f"{'median_d2':>9} " + " ".join(f"{s:8.3f}" for s in sat) + "   "
              + " ".join(f"{v:7.4f}" for v in traj[-1, :, 1]) + f"  {readings(traj)[1]}")
        """,
    ),
    (
        "md",
        """
        Read the table row by row. Where the gauge is near 0 (σ far too small) every layer gets the same value —
        HSIC(T, Y) no longer depends on the layer at all — and near 1 (σ far too large) everything goes to 0. Check the
        row of the tutorial's σ = 5: for the wide hidden layers of this network its gauge is close to 0, so that
        choice sits at the edge of the useful range, and the "compresses?" column changes between neighbouring
        values of σ. A conclusion that holds only for one σ is a property of σ, not of the network.

        The widget shows the same gauge next to its controls. Below, a `RunView` of this run; the next cell moves its
        σ slider to a too small and a too large value, reads the gauge, and finally switches to the `median_d2`
        rule (try the slider yourself: every epoch is redrawn at once).
        """,
    ),
    (
        "code",
        """
        view = ib.RunView(run, estimators=("hsic", "cka", "renyi_mi", "kde_upper"), sigma=SIGMA)
        view
        """,
    ),
    (
        "code",
        """
        for sigma in (0.05, 1000.0, SIGMA):
            view.controls.sigma.value = sigma
            view.sync()
            print(f"sigma = {sigma:>7g}: {view.saturation.value}")
        view.controls.sigma_rule.value = "median_d2"
        view.sync()
        print(f"rule median_d2: {view.saturation.value}")
        """,
    ),
    (
        "md",
        """
        ## 3. The target: labels or the network's output?

        ibwidget's default Y is the **true label** (one-hot, linear kernel). PyGlow measured "HSIC(H, Y)" against the
        **network's own softmax output**, with the same Gaussian σ = 5. Two problems with that choice:

        * the output is a function of $T$ itself, so the dependence grows as the network becomes *confident* — also
          when it is confidently wrong; it is not a measure of generalisation;
        * a softmax output lives in a tiny box (distances ≤ √2), so with σ = 5 its kernel values are all between
          0.96 and 1: the kernel is saturated and HSIC values are minute.
        """,
    ),
    (
        "code",
        """
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(run.probe_x.to(model.device)), -1).cpu()
        K = ib.kernels.gaussian(ib.kernels.gram(probs), SIGMA)
        off = K[~torch.eye(len(K), dtype=torch.bool)]
        print(f"Gaussian kernel of the softmax output, sigma={SIGMA}: values in [{off.min():.3f}, {off.max():.3f}]")

        labels = run.trajectories("hsic", sigma=SIGMA, target="labels")
        output = run.trajectories("hsic", sigma=SIGMA, target="output")
        cka_out = run.trajectories("cka", sigma=SIGMA, target="output")
        print(f"\\n{'layer':>9} {'HSIC(T, labels)':>16} {'HSIC(T, output)':>16} {'CKA(T, output)':>15}   (last epoch)")
        for i, name in enumerate(run.layer_names):
            print(f"{name:>9} {labels[-1, i, 1]:>16.4g} {output[-1, i, 1]:>16.4g} {cka_out[-1, i, 1]:>15.4g}")
        # readings() looks at [..., 0]: reversing the last axis makes it read the dependence on Y
        print("\\nY trend (labels):", readings(labels[..., ::-1])[0], "  Y trend (output):",
              readings(output[..., ::-1])[0])
        """,
    ),
    (
        "md",
        """
        ## Why conclusions depend on these choices

        * **Scale** is arbitrary: normalisers differ by factors of $m$ between tools, kernels by their σ.
        * **Shape** can change: centred (HSIC) versus normalised (CKA, nHSIC) measures, kernel versus
          mutual-information estimators, and σ can each turn a rise into a fall for a given layer.
        * **Y** matters: dependence on the labels measures what the layer knows about the task; dependence on the
          output measures agreement with the network's own (maybe wrong) predictions.
        * Mutual information of a deterministic network is infinite (or $\\log_2 m$ on a finite probe) in
          principle; finite values come from binning, noise or kernel width — the estimator *defines* the quantity
          (Saxe et al. 2018; Goldfeld et al. 2019; Geiger 2021, *On information plane analyses of neural network
          classifiers — a review*).

        Report the estimator, its normaliser, σ (or its rule), the target and the probe size with every information
        plane, and check that a claim survives a change of each.
        """,
    ),
]

# ------------------------------------------------------------------------------------------------ 04

NB04 = [
    (
        "md",
        """
        # Bring your own estimator

        Every dependence measure in ibwidget lives in a registry. Register a function under a name and it appears in
        the widget's estimator dropdown, in `run.trajectories(name)` and in `ibwidget info --estimator name` — and
        because runs store Gram matrices, it applies to **every recorded epoch**, also of runs trained before you
        wrote it.

        As an example we add **kernel alignment without centring** (Cristianini et al. 2002):

        $$A(K, L) = \\frac{\\langle K, L \\rangle_F}{\\lVert K \\rVert_F \\, \\lVert L \\rVert_F}.$$

        It is CKA without the centring matrix $H$ — and comparing the two shows why HSIC and CKA centre.
        """,
    ),
    (
        "params",
        """
        EPOCHS = 10  # the seed tutorial trained 7 epochs of MNIST
        BATCH_SIZE = 64  # seed tutorial: 64
        PROBE = 128  # seed settings: 512
        SIGMA = 5.0  # seed tutorial: 5
        DATASET = "digits"  # offline; "mnist" needs its files or the network
        DEVICE = "auto"  # CUDA when present
        SEED = 0
        """,
    ),
    (
        "code",
        """
        import torch

        import ibwidget as ib
        """,
    ),
    (
        "md",
        """
        ## Write and register it

        An estimator with `needs="kernels"` receives two kernel matrices built from the stored snapshots with the
        widget's current σ and target: $K_T$ of the layer and $K_Z$ of X or Y. $K_T$ may come as a batch of shape
        (…, m, m) — several epochs and layers at once — so write it with operations over the last two dimensions and
        return one value per matrix. `label` is the axis label (`{a}` and `{b}` are filled in), `variant` and `units`
        are added to it. `overwrite=True` lets you re-run the cell after editing the function.

        Other kinds: `needs="distances"` gets squared distances and a noise variance (like the KDE bounds),
        `needs="activations"` gets the raw activations (like binning; only for layers the run kept), and
        `uses_sigma=False` greys out the σ slider.
        """,
    ),
    (
        "code",
        """
        @ib.estimators.register("alignment", label="A({a}, {b})", variant="uncentred", overwrite=True)
        def kernel_alignment(K, L):
            \"\"\"Kernel alignment without centring (Cristianini et al. 2002): <K, L>_F / (|K|_F |L|_F).\"\"\"
            inner = (K * L).sum((-2, -1))
            return inner / (K.square().sum((-2, -1)).sqrt() * L.square().sum((-2, -1)).sqrt())


        print("registered:", ib.estimators.names())
        print("axis label:", ib.estimators.get("alignment").axis_label("T", "Y"))
        """,
    ),
    (
        "md",
        """
        ## Check it before trusting it

        Two quick checks on random data: a representation is perfectly aligned with itself, and two **independent**
        representations should score near zero. The second check fails for the uncentred alignment — Gaussian kernel
        values are all positive, so any two kernels "agree" a lot — while CKA, which centres first, passes. That is
        exactly why HSIC and CKA use $H$.
        """,
    ),
    (
        "code",
        """
        g = torch.Generator().manual_seed(0)
        A = torch.randn(200, 30, generator=g, dtype=torch.float64)
        B = torch.randn(200, 30, generator=g, dtype=torch.float64)  # independent of A
        sigma = 8.0  # about the typical distance between these samples
        KA, KB = ib.kernels.gaussian(ib.kernels.gram(A), sigma), ib.kernels.gaussian(ib.kernels.gram(B), sigma)
        alignment = ib.estimators.get("alignment")
        print(f"alignment(K, K) = {float(alignment(KA, KA)):.4f}   cka(K, K) = {float(ib.estimators.cka(KA, KA)):.4f}")
        print(f"independent A, B: alignment = {float(alignment(KA, KB)):.4f}   "
              f"cka = {float(ib.estimators.cka(KA, KB)):.4f}")
        """,
    ),
    (
        "md",
        """
        ## Find it in the widget

        Estimators named in `estimators=` come first in the dropdown, then every other registered one. We train
        the seed model on the digits data with our estimator selected.
        """,
    ),
    (
        "code",
        """
        from ibwidget.cli import seed_model

        train, val, _ = getattr(ib.datasets, DATASET).load_data(BATCH_SIZE, seed=SEED)
        x0, _ = next(iter(train))
        torch.manual_seed(SEED)
        model = seed_model(tuple(x0.shape[1:]), device=DEVICE)
        trainer = ib.Trainer(model, train, val, epochs=EPOCHS, probe=PROBE, sigma=SIGMA,
                             estimators=("alignment", "cka", "hsic"), name="seed model, custom estimator")
        print("dropdown:", list(trainer.controls.estimator.options))
        trainer
        """,
    ),
    (
        "code",
        """
        trainer.start()
        run = trainer.wait()
        print(trainer.status, "| estimator shown:", trainer.controls.estimator.value)
        """,
    ),
    (
        "md",
        """
        Switching the dropdown from code does what a click does; `sync()` waits until the figures are redrawn. We
        compare the two measures in numbers too: the uncentred alignment sits high for every layer and moves little,
        CKA spreads the layers apart.
        """,
    ),
    (
        "code",
        """
        trainer.controls.estimator.value = "cka"
        trainer.sync()
        trainer.controls.estimator.value = "alignment"
        trainer.sync()

        align, cka = run.trajectories("alignment", sigma=SIGMA), run.trajectories("cka", sigma=SIGMA)
        print(f"{'layer':>9} {'A(T,X)':>8} {'A(T,Y)':>8} {'CKA(T,X)':>9} {'CKA(T,Y)':>9}   (last epoch)")
        for i, name in enumerate(run.layer_names):
            a, c = align[-1, i], cka[-1, i]
            print(f"{name:>9} {a[0]:>8.4f} {a[1]:>8.4f} {c[0]:>9.4f} {c[1]:>9.4f}")
        """,
    ),
    (
        "md",
        """
        ## Going further

        * Keep an estimator for later sessions by putting its `register(...)` in a module you import.
        * PyGlow's way still works: subclass `ibwidget.estimators.Estimator`, define `criterion(x, y)` on
          activations and `model.attach_evaluator(...)`. Such criteria are evaluated once per epoch during training
          and, unlike registered estimators, cannot be re-estimated with another σ afterwards.
        * Ideas: HSIC with a linear kernel on T, the distance correlation, or a mutual-information estimator of your
          own; check each against cases with a known answer first, as above.
        """,
    ),
]

# ------------------------------------------------------------------------------------------------ 05

NB05 = [
    (
        "md",
        """
        # Any PyTorch model: tracking layers by name

        `IBSequential` mirrors PyGlow, but ibwidget does not need it: the `Trainer` takes **any `nn.Module`** and a
        list of submodule names. It attaches forward hooks to those submodules while it measures the probe, stores
        their outputs' Gram matrices, and removes the hooks again — the model's code and outputs stay untouched.
        """,
    ),
    (
        "params",
        """
        EPOCHS = 10  # the seed tutorial trained 7 epochs of MNIST
        BATCH_SIZE = 64  # seed tutorial: 64
        PROBE = 256  # seed settings: 512
        SIGMA = 5.0  # seed tutorial: 5
        LR = 1e-3  # Adam
        DATASET = "digits"  # offline; "mnist" needs its files or the network (28x28 inputs work too)
        DEVICE = "auto"  # CUDA when present
        SEED = 0
        """,
    ),
    (
        "code",
        """
        import torch
        from torch import nn

        import ibwidget as ib
        """,
        LOAD_DIGITS,
    ),
    (
        "md",
        """
        ## A plain CNN

        Nothing ibwidget-specific: two convolution blocks and two linear layers, with a functional ReLU in
        `forward` to show that only *modules* can be tracked.
        """,
    ),
    (
        "code",
        """
        class SmallCNN(nn.Module):
            def __init__(self, in_channels=1, num_classes=10):
                super().__init__()
                self.features = nn.Sequential(
                    nn.Conv2d(in_channels, 16, 3, padding=1),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                    nn.Conv2d(16, 32, 3, padding=1),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool2d(2),
                )
                self.fc1 = nn.Linear(32 * 2 * 2, 64)
                self.fc2 = nn.Linear(64, num_classes)

            def forward(self, x):
                h = self.features(x).flatten(1)
                h = torch.relu(self.fc1(h))  # functional: there is no module for this ReLU
                return self.fc2(h)


        torch.manual_seed(SEED)
        cnn = SmallCNN(in_channels=INPUT_SHAPE[0])
        for name, module in cnn.named_modules():
            if name:
                print(f"{name:>12}  {module}")
        """,
    ),
    (
        "md",
        """
        ## Choosing the layers

        A hook records a module's **output**. So `"features.0"` (the first `Conv2d`) gives the convolution *before*
        its ReLU, and `"features.1"` the activation after it. Here we track what the next layer actually receives:
        both ReLUs of the feature extractor, then `fc1` (pre-activation — its ReLU is functional) and the logits
        `fc2`. Without `layers=`, the Trainer tracks every leaf module that has parameters (`features.0`,
        `features.3`, `fc1`, `fc2`). Misspelled names are refused with a suggestion.
        """,
    ),
    (
        "code",
        """
        LAYERS = ["features.1", "features.4", "fc1", "fc2"]
        trainer = ib.Trainer(
            cnn, train, val, epochs=EPOCHS, layers=LAYERS, loss="cross_entropy", optimizer="Adam", lr=LR,
            probe=PROBE, sigma=SIGMA, estimators=("hsic", "cka"), device=DEVICE, seed=SEED, name="SmallCNN",
        )
        trainer
        """,
    ),
    (
        "code",
        """
        trainer.start()
        run = trainer.wait()
        print(trainer.status, "| tracked:", run.layer_names, "| widths:", run.layer_dims)
        print(f"final validation accuracy {run.history['val_accuracy'][-1]:.3f}")
        """,
    ),
    (
        "code",
        TABLE_HELPER,
        """

        traj = table(run, "hsic")
        print()
        traj = table(run, "cka")
        """,
    ),
    (
        "md",
        """
        ## Nothing left behind

        The hooks exist only while the probe is measured: after training, `cnn` is an ordinary PyTorch model again —
        evaluate it, save it, train it further. Here it classifies the held-out test images, and the run is saved
        for a later `RunView`.
        """,
    ),
    (
        "code",
        """
        from pathlib import Path

        cnn.eval()
        device = next(cnn.parameters()).device
        correct = total = 0
        with torch.no_grad():
            for x, y in test:
                correct += int((cnn(x.to(device)).argmax(1).cpu() == y).sum())
                total += len(y)
        print(f"test accuracy: {correct / total:.3f} on {total} images")

        Path("runs").mkdir(exist_ok=True)
        print("saved the run to", run.save("runs/05_small_cnn.ibrun"))
        """,
    ),
    (
        "md",
        """
        ## Without a widget

        The same tracking runs headless with the engine — in a script, on a cluster, from a test:

        ```python
        engine = ib.Engine(cnn, train, val, epochs=10, layers=LAYERS, optimizer="Adam", lr=1e-3, probe=512)
        engine.on("epoch_end", lambda e: print(e.epoch, e.logs))
        engine.start(); engine.wait()
        engine.run.save("runs/cnn.ibrun")     # open later with ib.RunView("runs/cnn.ibrun")
        ```
        """,
    ),
]

NOTEBOOKS = {
    "01_hsic_training_dynamics.ipynb": NB01,
    "02_dropout_and_regularization.ipynb": NB02,
    "03_estimators_and_sigma.ipynb": NB03,
    "04_custom_estimator.ipynb": NB04,
    "05_any_pytorch_model.ipynb": NB05,
}


def build(cells) -> nbformat.NotebookNode:
    """A notebook (no outputs, stable ids) from ``(kind, *source_parts)`` cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, *parts) in enumerate(cells):
        if len(parts) == 1 and isinstance(parts[0], tuple):
            parts = list(parts[0])
        # each part is dedented on its own: shared snippets are written flush left, cell sources indented
        text = "\n\n".join(textwrap.dedent(part).strip("\n") for part in parts).strip()
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(cells) -> str:
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for name, cells in NOTEBOOKS.items():
        path, text = HERE / name, render(cells)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
