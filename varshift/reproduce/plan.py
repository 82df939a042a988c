"""What the empirical reproduction trains: its settings and one task per training run.

Every independent run (architecture, placement, noise, rate, seed) is a
:class:`varshift.tasks.Task` with a deterministic key, so a sweep is cached, resumable
and runs in parallel; the figures only read the results.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks import Task

__all__ = ["Settings", "SWEEP_RATES", "HEAD_RATES", "UOUT_BETAS", "EQUAL_VARIANCE", "PILOT_ARMS",
           "OTHER_PILOT_ARMS", "PILOT_BLOCKS", "QUICK_EPOCHS", "QUICK_CASES", "network_task",
           "network_tasks", "pilot_tasks", "width_tasks", "stale_tasks"]

SWEEP_RATES = (0.1, 0.3, 0.5, 0.7)
"""Drop rates of the placement sweep (Li et al.'s Fig. 4; 0.0 is the baseline)."""
HEAD_RATES = (0.1, 0.2, 0.3, 0.5)
"""Drop rates of one Dropout after every BatchNorm (Table 4)."""
UOUT_BETAS = (0.1, 0.2, 0.3, 0.5, 1.0)
"""Uout's beta at the (b) positions (Table 6, plus beta 1)."""
EQUAL_VARIANCE = (("uout", 1.0), ("dropout", 0.25))
"""Uout(beta=1) and Dropout(0.25) have the same noise variance, 1/3, at (a) and (b)."""
TRACKED = {(0.0, "a"), (0.5, "a"), (0.5, "b")}
"""(rate, placement) of the Dropout runs whose accuracy is tracked every epoch."""
PILOT_ARMS = (("a", 0.0, "dropout"), ("a", 0.5, "dropout"), ("b", 0.5, "dropout"))
"""(placement, rate, noise) of the power pilot: the baseline and Dropout 0.5 at (a) and (b)."""
OTHER_PILOT_ARMS = (("a", 0.1, "dropout"), ("a", 0.7, "dropout"), ("b", 0.7, "dropout"),
                    ("b", 0.2, "uout"))
"""The arms the first pilot left out, whose claims can be testable (docs/power-analysis.md,
"Left for later sessions", item 2): (a) 0.1, (a)/(b) 0.7 and Uout 0.2; the pilot's seeds
already have their baselines."""
PILOT_BLOCKS = (("PreResNet", 10), ("WRN", 5), ("DenseNet", 5))
"""Order of the power pilot: so many seeds of each architecture, in turn, block after block."""
QUICK_EPOCHS = 4
"""Epochs of the quick mode's 1-D networks (30 in the full mode). Five until 2026-12-07: four
brought the quick run on an idle 2-core Intel Xeon from 4 min 58 s, 2 s under its
5-minute bar, to the figure in ``benchmarks/README.md``."""
QUICK_CASES = {"bn-dropout-mnist-convnet": {"seeds": 3, "n_train": 4000, "n_stats": 500},
               "layer-orderings": {"n_train": 1500, "n_test": 500, "n_stats": 500},
               "stale-running-stats": {"question_steps": 200}}
"""What the quick reproduction trims from the case studies' own quick mode, which the full
reproduction and ``varshift case NAME`` run unchanged: case name -> keyword arguments of
its ``run`` and ``tasks`` (:class:`varshift.cases.Case`). The quick run is a preview:
these three cases took 60 % of its CPU time (the layer orderings' training, the convnet
case's five seeds, the stale-statistics case's 600-step runs). Trimmed to 3 convnet
seeds, 2,000 training images and 300 steps, the quick run still took 5 min 32 s on an
idle 2-core AMD EPYC (2026-12-07; the bar is 5 minutes); with 1,500 images and 200 steps
5 min 13 s; the convnet case has since trained on 4,000 images (so its quick runs are
no longer seeds 0-2 of the full reproduction's, and do not share its cache). On an Intel
Xeon (issue 25) it took 5 min 15 s; measuring the shift and re-estimating the statistics
of the two MNIST convnet cases on 500 training images instead of 1,000 and 2,000 (per
channel, 500 images of a convolution's outputs still give tens of thousands of values)
took about 0.9 s from each layer-orderings run and 0.6 s from each convnet run."""

_EXPERIMENTS = "varshift.reproduce.experiments"


@dataclass(frozen=True)
class Settings:
    """Sizes of one reproduction run.

    Parameters
    ----------
    quick : bool
        Minutes (PreResNet only, 3 seeds, :data:`QUICK_EPOCHS` epochs on 5,000
        sequences, and lighter case studies: :data:`QUICK_CASES`) instead of hours
        (three architectures, 5 seeds, 30 epochs on 10,000 sequences).
    seeds : int, optional
        Seeds per setting (default 3 quick, 5 full).
    seed : int, default 0
        First seed.
    train_sequences : int, optional
        Train on the first ``train_sequences`` training sequences only (the harder
        regime of ``docs/power-analysis.md``); the test set and the number of updates
        stay those of all training sequences (the epochs grow to match). Default: all.
    """

    quick: bool = True
    seeds: int | None = None
    seed: int = 0
    train_sequences: int | None = None

    def __post_init__(self):
        if self.seeds is not None and (isinstance(self.seeds, bool) or not isinstance(self.seeds, int)
                                       or self.seeds < 2):
            raise ValueError(f"seeds must be an integer >= 2 (intervals need two), got {self.seeds!r}")
        n, most = self.train_sequences, self.num_samples * 4 // 5
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 100 <= n <= most):
            raise ValueError(f"train_sequences must be an integer in [100, {most}], got {n!r}")

    @property
    def n_seeds(self) -> int:
        return self.seeds or (3 if self.quick else 5)

    @property
    def seed_list(self):
        return list(range(self.seed, self.seed + self.n_seeds))

    @property
    def epochs(self) -> int:
        epochs = QUICK_EPOCHS if self.quick else 30
        if self.train_sequences is None:
            return epochs
        return round(epochs * (self.num_samples * 4 // 5) / self.train_sequences)

    @property
    def num_samples(self) -> int:
        return 5000 if self.quick else 10_000

    @property
    def architectures(self):
        return ["PreResNet"] if self.quick else ["PreResNet", "WRN", "DenseNet"]

    def describe(self) -> str:
        train = self.train_sequences or self.num_samples * 4 // 5
        return (f"{'quick' if self.quick else 'full'} mode: {', '.join(self.architectures)}; "
                f"{self.n_seeds} seeds ({self.seed}-{self.seed + self.n_seeds - 1}); "
                f"{self.epochs} epochs of Adam (lr 3e-3, cosine decay to 0, batch 100) on "
                f"{train:,} MNIST-1D training sequences, {self.num_samples // 5:,} test sequences")

    def case_options(self, name) -> dict:
        """Keyword arguments of case ``name``'s ``run`` and ``tasks`` in this
        reproduction: those of :data:`QUICK_CASES` in the quick mode, none in the full
        mode (the case's own quick mode)."""
        return dict(QUICK_CASES.get(name, {})) if self.quick else {}

    def describe_cases(self) -> str:
        """How this reproduction runs the case studies, for its report: in their quick
        mode; in the quick reproduction, with the settings :data:`QUICK_CASES` changes
        (named as in the case's results) and their values in the case's quick mode."""
        if not self.quick:
            return "case studies in their quick mode"
        from ..cases import CASES

        trims = []
        for name, options in QUICK_CASES.items():
            own, trimmed = _case_settings(CASES[name], {}), _case_settings(CASES[name], options)
            trims.append(f"{name} with " + ", ".join(
                f"{key.replace('_', ' ')} {value:,} (not {own[key]:,})"
                for key, value in trimmed.items() if value != own[key]))
        return f"case studies in their quick mode, trimmed for a preview: {'; '.join(trims)}"


def _case_settings(case, options) -> dict:
    """The settings (as in its result) of ``case``'s quick mode run with ``options``."""
    seeds = options.get("seeds") or case.default_seeds.quick
    own = case._options({k: v for k, v in options.items() if k != "seeds"})
    return case.settings(seeds, case._params(True, own), own)


def network_task(settings, arch, placement, rate, seed, noise="dropout", options=None):
    """The task training one 1-D network (rate 0: the no-noise baseline); ``options``:
    more keyword arguments of ``train_network`` (in the task's parameters only when
    given, so that other tasks keep their keys)."""
    if rate == 0:
        placement, noise = "a", "dropout"  # one baseline network serves every arm
    label = f"network/{arch}/{'base' if rate == 0 else f'{noise}-{placement}-{rate:g}'}/seed{seed}"
    # n_train only in the harder regime: the quick and full runs keep their keys
    subset = {} if settings.train_sequences is None else {"n_train": settings.train_sequences}
    return Task(label, f"{_EXPERIMENTS}:train_network", {
        "arch": arch, "placement": placement, "rate": rate, "noise": noise, "seed": seed,
        "epochs": settings.epochs, "num_samples": settings.num_samples,
        "track": (rate, placement) in TRACKED and noise == "dropout", **subset, **(options or {})})


def network_tasks(settings):
    """Every 1-D network run: baseline, the (a)/(b) sweep, head Dropout, Uout, and the
    equal-variance pair, for each architecture and seed."""
    arms = [("a", 0.0, "dropout")]
    arms += [(pl, r, "dropout") for pl in "ab" for r in SWEEP_RATES]
    arms += [("head", r, "dropout") for r in HEAD_RATES]
    arms += [("b", b, "uout") for b in UOUT_BETAS]
    arms += [(pl, amount, noise) for noise, amount in EQUAL_VARIANCE for pl in "ab"]
    tasks = [network_task(settings, arch, pl, r, s, noise)  # seed-major: a stopped run
             for s in settings.seed_list for arch in settings.architectures  # has whole seeds
             for pl, r, noise in arms]
    return list({t.key: t for t in tasks}.values())


def pilot_tasks(settings, blocks=1, arms=PILOT_ARMS):
    """The power pilot's runs of ``arms`` (:data:`PILOT_ARMS`, or :data:`OTHER_PILOT_ARMS`)
    in the order of :data:`PILOT_BLOCKS`: block ``b`` gives each architecture its next
    seeds (from ``settings.seed``), seed by seed, so a stopped pilot has whole seeds and
    PreResNet first."""
    tasks, first = [], {arch: settings.seed for arch, _ in PILOT_BLOCKS}
    for _ in range(blocks):
        for arch, n in PILOT_BLOCKS:
            tasks += [network_task(settings, arch, pl, rate, s, noise)
                      for s in range(first[arch], first[arch] + n) for pl, rate, noise in arms]
            first[arch] += n
    return tasks


def width_tasks(settings, data_dir=None):
    """MLPs on MNIST over widths, without Dropout and with Dropout 0.5 at (b)."""
    widths = (32, 128, 512) if settings.quick else (32, 128, 512, 2048)
    n_train, epochs = (10_000, 2) if settings.quick else (20_000, 5)
    return [Task(f"mlp/w{w}/rate{rate:g}/seed{s}", f"{_EXPERIMENTS}:train_mlp",
                 {"width": w, "rate": rate, "seed": s, "epochs": epochs, "n_train": n_train},
                 options={"data_dir": data_dir})
            for w in widths for rate in (0.0, 0.5) for s in settings.seed_list]


def stale_tasks(settings):
    """PreResNet without noise over batch sizes and BatchNorm momenta."""
    batch_sizes = (16, 128) if settings.quick else (16, 64, 256)
    momenta = (0.01, 0.1) if settings.quick else (0.01, 0.1, 0.5)
    epochs = 3 if settings.quick else 10
    return [Task(f"stale/bs{bs}/m{m:g}/seed{s}", f"{_EXPERIMENTS}:train_stale",
                 {"batch_size": bs, "momentum": m, "seed": s, "epochs": epochs,
                  "num_samples": settings.num_samples})
            for bs in batch_sizes for m in momenta for s in settings.seed_list]
