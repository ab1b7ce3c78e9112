"""Judgers of the bad-input corpus: each misbehaves in one way that judge score must record."""


def nan_judger(trajectories, **_):
    return [float("nan") for _ in trajectories]


def raising_judger(trajectories, **_):
    raise RuntimeError("the judger failed on purpose")


def wrong_count_judger(trajectories, **_):
    return [1.0] * (len(trajectories) + 1)


def string_judger(trajectories, **_):
    return ["very good" for _ in trajectories]


not_callable = 3
