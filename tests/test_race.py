"""finetune=auto's race as a schedule: what it spends on whom, when it stops, when it reruns."""

from __future__ import annotations

import pytest

from experiments.finetune.race import Candidate, race, rung_steps
from experiments.finetune import ClassifierOnly, Full, Scratch


class Runner:
    """A trial runner with a score per (strategy, seed) that grows with the steps trained."""

    def __init__(self, scores: dict[str, float], growth: float = 0.0, second_seed: dict[str, float] | None = None):
        self.scores, self.growth, self.second = scores, growth, second_seed or {}
        self.calls: list[tuple[str, int, int, int]] = []

    def __call__(self, name: str, epochs: int, batches: int, seed: int):
        self.calls.append((name, epochs, batches, seed))
        score = self.second[name] if seed and name in self.second else self.scores[name]
        strategy = {"classifier_only": ClassifierOnly(), "scratch": Scratch(steps_mult=2.0)}.get(name, Full(name=name))
        return min(1.0, score + self.growth * epochs * batches), strategy


FROZEN = Candidate("classifier_only", frozen=True)


def test_frozen_candidates_train_the_whole_schedule_first_and_cost_none_of_the_budget():
    runner = Runner({"classifier_only": 0.50, "full": 0.60, "lora": 0.55, "partial": 0.40})
    result = race([Candidate("full"), FROZEN, Candidate("lora"), Candidate("partial")], runner, "val/acc",
                  run_steps=1000, batches_per_epoch=50, fraction=0.5, val_size=2000)
    first = result.trials[0]
    assert (first.strategy, first.rung, first.steps, first.backbone_steps) == ("classifier_only", 0, 1000, 0)
    backbone = [t for t in result.trials if t.rung > 0]
    assert all(t.backbone_steps == t.steps for t in backbone)
    # the whole race's backbone training stays within its budget; the frozen run's 1000 steps are not in it
    assert result.backbone_steps == sum(t.steps for t in backbone) <= result.budget_steps == 500
    assert first.steps > max(t.steps for t in backbone)
    # successive halving: the better half of the three backbone candidates trains twice as long
    rung1 = {t.strategy: t.steps for t in backbone if t.rung == 1}
    rung2 = {t.strategy: t.steps for t in backbone if t.rung == 2}
    assert list(rung1) == ["full", "lora", "partial"] and list(rung2) == ["full", "lora"]
    assert all(rung2[n] == 2 * rung1[n] for n in rung2)
    assert result.winner == "full"


def test_a_frozen_priors_challengers_get_a_fraction_of_what_it_costs():
    runner = Runner({"classifier_only": 0.7, "full": 0.9, "lora": 0.8})
    # a few hundred images: the frozen prior's run is a feature extraction of ~7 batches
    small = race([Candidate("classifier_only", True, run_cost=7 / 3), Candidate("full"), Candidate("lora")], runner,
                 "val/acc", 400, 4, 0.5, val_size=100)
    assert small.trials == [] and small.winner == "classifier_only"  # nothing left to compare: no trial at all
    assert small.budget_steps == 1 and "did not race" in small.notes[-1]
    # ten thousand images: the extraction costs as much as ~110 training steps, and buys its challengers trials
    large = race([Candidate("classifier_only", True, run_cost=330 / 3), Candidate("full"), Candidate("lora")], runner,
                 "val/acc", 1000, 312, 0.5, val_size=2000)
    assert large.winner == "full" and large.backbone_steps <= large.budget_steps == 55
    # a backbone prior on a run too short for any trial is not overruled without one: it trains
    short = race([Candidate("full"), Candidate("classifier_only", True, run_cost=1), Candidate("lora")], runner,
                 "val/acc", 8, 4, 0.5, val_size=100)
    assert short.winner == "full" and short.backbone_steps == 0


def test_a_frozen_score_at_the_ceiling_leaves_nothing_to_race_for():
    runner = Runner({"classifier_only": 0.995, "full": 1.0})
    result = race([FROZEN, Candidate("full")], runner, "val/acc", 400, 4, 0.5, val_size=100)
    assert [c[0] for c in runner.calls] == ["classifier_only"] and result.winner == "classifier_only"
    assert result.backbone_steps == 0 and "no backbone candidate trains" in result.notes[0]


def test_backbone_candidates_far_behind_a_frozen_prior_stop_after_the_first_rung():
    runner = Runner({"classifier_only": 0.90, "full": 0.50, "lora": 0.55})
    result = race([FROZEN, Candidate("full"), Candidate("lora")], runner, "val/acc", 1000, 50, 0.5, val_size=2000)
    assert {t.rung for t in result.trials} == {0, 1} and result.winner == "classifier_only"
    assert "the second rung is skipped" in result.notes[0]
    # a backbone prior gets its second rung however far behind a frozen neighbour it starts
    behind = race([Candidate("full"), FROZEN, Candidate("lora")], runner, "val/acc", 1000, 50, 0.5, val_size=2000)
    assert 2 in {t.rung for t in behind.trials}
    # ... but one within the noise of the frozen score goes on
    close = Runner({"classifier_only": 0.60, "full": 0.58})
    assert 2 in {t.rung for t in race([FROZEN, Candidate("full")], close, "val/acc", 400, 4, 0.5, val_size=100).trials}


def test_a_close_finish_trains_the_top_two_again_with_a_second_seed_and_the_mean_decides():
    # full leads lora by 1 point on 100 validation samples (noise ~7 points); lora's second seed is better
    runner = Runner({"full": 0.70, "lora": 0.69, "partial": 0.30}, second_seed={"full": 0.60, "lora": 0.75})
    result = race([Candidate("full"), Candidate("lora"), Candidate("partial")], runner, "val/acc", 400, 4, 0.5,
                  val_size=100)
    seconds = [t for t in result.trials if t.seed == 1]
    assert [t.strategy for t in seconds] == ["full", "lora"] and result.winner == "lora"
    first_runs = {t.strategy: t for t in result.trials if t.rung == 2 and t.seed == 0}
    assert all(t.steps == first_runs[t.strategy].steps for t in seconds)  # as long as its first seed
    assert "within the noise" in result.notes[-1]
    assert result.backbone_steps <= result.budget_steps  # the budget kept room for the second seeds
    # still within the noise over two seeds: the prior stays, whether it is the cheaper or not ...
    tied = Runner({"classifier_only": 0.96, "full": 0.97}, second_seed={"classifier_only": 0.97, "full": 0.97})
    result = race([FROZEN, Candidate("full")], tied, "val/acc", 400, 4, 0.5, val_size=100)
    assert result.winner == "classifier_only" and "the prior stays, classifier_only" in result.notes[-1]
    tied = Runner({"classifier_only": 0.97, "full": 0.96}, second_seed={"classifier_only": 0.97, "full": 0.97})
    assert race([Candidate("full"), FROZEN], tied, "val/acc", 400, 4, 0.5, val_size=100).winner == "full"
    # ... and without the prior among the two, the cheaper wins: a frozen one over a backbone one
    tied = Runner({"partial": 0.2, "classifier_only": 0.96, "lora": 0.97}, second_seed={"classifier_only": 0.97, "lora": 0.97})
    result = race([Candidate("partial"), FROZEN, Candidate("lora")], tied, "val/acc", 400, 4, 0.5, val_size=100)
    assert result.winner == "classifier_only" and "the cheaper one wins, classifier_only" in result.notes[-1]
    # a clear lead on a large validation split runs no second seed
    clear = race([Candidate("full"), Candidate("lora")], Runner({"full": 0.80, "lora": 0.70}), "val/acc", 400, 4,
                 0.5, val_size=5000)
    assert not [t for t in clear.trials if t.seed] and clear.winner == "full"


def test_scratch_trains_its_own_budget_in_the_race():
    runner = Runner({"full": 0.5, "scratch": 0.5})
    result = race([Candidate("full"), Candidate("scratch", steps_mult=2.0)], runner, "val/acc", 1000, 50, 0.5,
                  val_size=10_000)
    rung1 = {t.strategy: t.steps for t in result.trials if t.rung == 1}
    assert rung1["scratch"] == pytest.approx(2 * rung1["full"], abs=4)
    assert result.backbone_steps <= result.budget_steps


def test_a_loss_objective_is_minimised():
    runner = Runner({"full": 0.9, "lora": 0.4})
    assert race([Candidate("full"), Candidate("lora")], runner, "val/loss", 400, 4, 0.5).winner == "lora"


@pytest.mark.parametrize("mults", [[1.0], [1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 1.0, 1.0]])
def test_rung_steps_leave_room_for_both_rungs_and_the_second_seeds(mults):
    s = rung_steps(1000, mults, 0.5)
    ordered = sorted(mults, reverse=True)
    spent = s * sum(mults) + 2 * s * sum(ordered[: -(-len(mults) // 2)]) + 2 * s * sum((ordered * 2)[:2])
    assert spent <= 500 < spent + s * (sum(mults) + 4 * max(mults))
