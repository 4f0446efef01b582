"""One formula for the seeds a run derives from its own seed."""


def derived_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th draw of a run seeded ``seed`` (an epoch's shuffle, an iteration's
    prompts): a function of both alone, so a resumed run draws what the uninterrupted one did."""
    return seed * 1_000_003 + index
