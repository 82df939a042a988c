"""The base of every case study: what its training runs are and how they are run, written
once.

A case declares only what is its own (:class:`Case`): its name, its result class, its
task function, its default number of seeds, the sizes of its quick and full runs, the
settings it compares (:class:`Arm`) and how its runs are summarised. The base turns
these into the case's :meth:`Case.tasks` and :meth:`Case.run`, so every case takes the
same arguments, labels its tasks the same way and runs them with
:func:`varshift.tasks.run` (serially, in local processes or on a Dask cluster).
"""

from __future__ import annotations

import abc
import time
from typing import NamedTuple

from ..tasks import Task

__all__ = ["Case", "Arm", "Seeds", "run_tasks"]


class Seeds(NamedTuple):
    """A case's default number of seeds per setting, in its quick and its full mode."""

    quick: int
    full: int


class Arm(NamedTuple):
    """One setting a case compares (a configuration, an ordering, a schedule, ...).

    Attributes
    ----------
    key : str
        Its name in the result's ``numbers['runs']``, e.g. ``'BN + Dropout'``.
    label : str
        Its part of the task labels (``cases/NAME/LABEL/seedN``; ``/`` makes sub-folders
        in the cache), e.g. ``'BN-Dropout'``.
    params : dict
        The task parameters that set it apart, e.g. ``{'config': 'BN + Dropout'}``; the
        seed and the case's :meth:`~Case._params` are added to them.
    """

    key: str
    label: str
    params: dict


class Case(abc.ABC):
    """A case study: a posted question answered with training runs over several seeds.

    A subclass declares the class attributes below and implements :meth:`arms`,
    :meth:`settings` and :meth:`summarise`; it never redefines :meth:`run`,
    :meth:`tasks` or :meth:`_params`. For each arm and seed (``seed, seed + 1, ...``) one
    task calls :attr:`train` with the arm's parameters, ``seed`` and the run's sizes
    (:meth:`_params`); the same seed gives every arm the same initial weights and data
    order, so the arms are compared seed by seed.

    Attributes
    ----------
    name : str
        The case's name, e.g. ``'layer-orderings'`` (``varshift case NAME``).
    result : type
        Its :class:`~varshift.cases.CaseResult` subclass (with its ``plot``).
    train : callable
        The module-level function one task calls (as ``staticmethod(train_run)``).
    default_seeds : Seeds
        Seeds per arm when ``run`` is given none.
    sizes : dict
        ``name -> (quick value, full value)`` of the task parameters that depend on the
        mode, e.g. ``{'epochs': (2, 3)}``; a size also named in :attr:`options` can be
        set by the caller.
    options : tuple of str
        The case's own keyword arguments of :meth:`run` and :meth:`tasks`: sizes the
        caller may set, and others documented in its class docstring; each defaults to
        None.
    reads_mnist : bool
        Whether its tasks read MNIST: then ``data_dir`` is passed to each task as an
        option (not part of its key); otherwise ``data_dir`` is unused.
    """

    name: str
    result: type
    train: staticmethod
    default_seeds: Seeds
    sizes: dict = {}
    options: tuple = ()
    reads_mnist: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [a for a in ("name", "result", "train", "default_seeds") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"case class {cls.__name__} must declare {', '.join(missing)}")
        train = cls.__dict__.get("train", cls.train)
        function = getattr(train, "__func__", train)
        if getattr(function, "__qualname__", None) != getattr(function, "__name__", None):
            raise TypeError(f"case class {cls.__name__}: train must be a module-level function "
                            f"(a task imports it by name), got {function!r}")

    @abc.abstractmethod
    def arms(self, options) -> list:
        """The settings compared, in the order of the result's ``numbers['runs']``.

        Parameters
        ----------
        options : dict
            Every name of :attr:`options`, None where the caller gave none.

        Returns
        -------
        list of Arm

        Raises
        ------
        ValueError
            If an option names an arm the case does not have.
        """

    @abc.abstractmethod
    def settings(self, seeds, sizes, options) -> dict:
        """What was run, for the result's ``settings`` (in the order shown).

        Parameters
        ----------
        seeds : int
            Seeds per arm.
        sizes : dict
            The run's :meth:`_params`.
        options : dict
            As in :meth:`arms`.

        Returns
        -------
        dict
        """

    @abc.abstractmethod
    def summarise(self, runs, settings, seconds):
        """The case's result from its runs (declared as ``staticmethod(_result)``).

        Parameters
        ----------
        runs : dict
            ``arm key -> [one task result per seed]``, in the order of :meth:`arms`.
        settings : dict
            From :meth:`settings`.
        seconds : float
            Wall time of the run.

        Returns
        -------
        CaseResult
            An instance of :attr:`result`.
        """

    @property
    def function(self) -> str:
        """``'module:function'`` of :attr:`train`, as a :class:`~varshift.tasks.Task`
        names it."""
        return f"{self.train.__module__}:{self.train.__name__}"

    def _options(self, options) -> dict:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"case {self.name!r}: unknown option(s) {unknown}; its options are "
                            f"{list(self.options)}")
        return {name: options.get(name) for name in self.options}

    def _params(self, quick, options) -> dict:
        """The task parameters every run of the case shares: each of :attr:`sizes`, the
        caller's value where it gave one (a true value), else the mode's."""
        return {name: options.get(name) or (quick_value if quick else full_value)
                for name, (quick_value, full_value) in self.sizes.items()}

    def _plan(self, quick, seeds, seed, data_dir, options):
        """``(seeds per arm, arms, tasks, options)``: the tasks arm by arm, seed by seed."""
        seeds = seeds or (self.default_seeds.quick if quick else self.default_seeds.full)
        options = self._options(options)
        arms, params = self.arms(options), self._params(quick, options)
        extra = {"data_dir": data_dir} if self.reads_mnist else {}
        planned = [Task(f"cases/{self.name}/{arm.label}/seed{s}", self.function,
                        {**arm.params, "seed": s, **params}, extra)
                   for arm in arms for s in range(seed, seed + seeds)]
        return seeds, arms, planned, options

    def tasks(self, quick=True, *, seeds=None, seed=0, data_dir=None, **options) -> list:
        """The training runs :meth:`run` computes with the same arguments.

        Parameters
        ----------
        quick, seeds, seed, data_dir, **options
            As in :meth:`run`.

        Returns
        -------
        list of varshift.tasks.Task
            To compute them in one batch with others (``varshift reproduce`` does).
        """
        return self._plan(quick, seeds, seed, data_dir, options)[2]

    def run(self, quick=True, *, seeds=None, seed=0, data_dir=None, jobs=1, client=None,
            cache=None, progress=False, **options):
        """Compute the case's training runs (cached ones are read back) and summarise them.

        Parameters
        ----------
        quick : bool, default True
            The case's quick sizes (minutes; far from the posted regime) rather than its
            full ones (up to hours); see the case's class.
        seeds : int, optional
            Seeds per arm (default :attr:`default_seeds` of the mode).
        seed : int, default 0
            First seed; a seed draws the initial weights (the same in every arm) and the
            data order.
        data_dir : str, optional
            Folder with the MNIST IDX files (see :func:`varshift.datasets.load_mnist`);
            unused by a case that generates its data.
        jobs : int, default 1
            Training runs in this many local processes, each single-threaded (see
            :func:`varshift.tasks.run`); scripts need the ``if __name__ ==
            "__main__":`` guard.
        client : dask.distributed.Client, optional
            Run the training runs on this Dask cluster instead.
        cache : str or Path, optional
            Folder of cached per-run results (a stopped run resumes from it).
        progress : bool, default False
            One line per training run on stderr.
        **options
            The case's own settings (:attr:`options`); a missing or None one takes the
            mode's value. One named after a size overrides it: ``epochs`` (training
            length), ``n_train`` and ``n_test`` (training and test images); the others
            are documented in the case's class.

        Returns
        -------
        CaseResult
            An instance of the case's :attr:`result`; the same numbers whichever way the
            runs were computed.

        Raises
        ------
        TypeError
            If an option is not one of the case's.
        """
        start = time.perf_counter()
        seeds, arms, planned, options = self._plan(quick, seeds, seed, data_dir, options)
        records = iter(run_tasks(planned, jobs=jobs, client=client, cache=cache,
                                 progress=progress))
        runs = {arm.key: [next(records) for _ in range(seeds)] for arm in arms}
        settings = self.settings(seeds, self._params(quick, options), options)
        return self.summarise(runs, settings, time.perf_counter() - start)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


def run_tasks(tasks, *, jobs=1, client=None, cache=None, progress=False) -> list:
    """Run a case's training runs with :func:`varshift.tasks.run`.

    Parameters
    ----------
    tasks : list of varshift.tasks.Task
    jobs : int, default 1
        Local worker processes (1: in this process).
    client : dask.distributed.Client, optional
        Run them on this Dask cluster instead.
    cache : str or Path, optional
        Folder of cached results (a stopped run resumes).
    progress : bool, default False

    Returns
    -------
    list of dict
        The results, in the order of ``tasks``; the same whichever way they were run.
    """
    from ..tasks import run

    results, _ = run(tasks, cache, jobs=jobs, client=client, progress=progress)
    return [results[task.key] for task in tasks]
