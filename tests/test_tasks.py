"""The built-in tasks' gold judges on hand-made examples, and deterministic generation."""

import numpy as np
import pytest

from rlhf_jax.batches import NEGATIVE, NEUTRAL, NO_STEP, POSITIVE
from rlhf_jax.tasks import arithmetic as A
from rlhf_jax.tasks import classification as C
from rlhf_jax.tasks import summarization as S

DOC = "the zorb lamen is a zorb . kivo zorb and lamen to tupa . kivo lamen at the dorin ."


def test_salient_words_are_the_most_frequent_content_words():
    assert S.salient_words(DOC, 3) == ["lamen", "zorb", "kivo"]


def test_a_summary_covering_more_salient_words_wins_and_a_shorter_one_wins():
    cfg = S.SummarizationConfig(n_topics=3, target_len=3)
    better, worse = "zorb lamen kivo", "zorb tupa dorin"
    assert S.gold_reward(DOC, better, cfg) == pytest.approx(1.0)
    assert S.gold_reward(DOC, worse, cfg) == pytest.approx(1 / 3)
    longer = "zorb lamen kivo tupa dorin the"
    assert S.gold_reward(DOC, longer, cfg) == pytest.approx(1.0 - 0.5 * 3 / 3)
    assert S.gold_reward(DOC, "zorb lamen kivo", cfg) > S.gold_reward(DOC, longer, cfg)
    repeated = "zorb zorb lamen"
    assert S.gold_reward(DOC, repeated, cfg) == pytest.approx(2 / 3 - 1 / 3)
    assert S.gold_reward(DOC, "", cfg) == 0.0


def test_summarization_data_are_deterministic_and_labelled_mostly_by_the_gold_reward():
    a, b = S.preference_examples(200, seed=3), S.preference_examples(200, seed=3)
    assert a == b and a != S.preference_examples(200, seed=4)
    margins = np.array([ex["gold_margin"] for ex in a])
    assert (margins > 0).mean() > 0.7  # noisy like people, but mostly right
    sft = S.sft_examples(5, seed=0)
    assert all(ex["prompt"].endswith("\nTL;DR:") and ex["completion"].startswith(" ") for ex in sft)
    assert S.document_of(sft[0]["prompt"]) == sft[0]["document"]


def test_a_document_names_its_topics_in_the_lede_and_they_are_its_salient_words_by_a_margin():
    rng, cfg, vocabulary = np.random.default_rng(0), S.SummarizationConfig(), S.content_words()
    for _ in range(200):
        doc = S.make_document(rng, cfg, vocabulary)
        lede = doc.split(" . ")[0].split()
        salient = S.salient_words(doc, cfg.n_topics)
        assert set(salient) == set(lede) - set(S.FUNCTION_WORDS)
        words = [w for w in doc.split() if w not in S.FUNCTION_WORDS and w != "."]
        assert all(words.count(w) >= 2 for w in salient) and all(
            words.count(w) == 1 for w in S.other_words(doc, salient)
        )


def test_a_comparison_is_of_content_at_one_length_or_of_form_one_word_apart_and_never_of_equal_gold():
    kinds = []
    for ex in S.preference_examples(400, seed=5):
        a, b = sorted((ex["chosen"].split(), ex["rejected"].split()), key=len)
        assert ex["gold_margin"] != 0 and set(a + b) <= set(ex["document"].split())
        if len(a) == len(b):  # content: distinct words, whole salient words apart
            assert len(set(a)) == len(a) and len(set(b)) == len(b)
            whole = abs(ex["gold_margin"]) / 0.25
            assert whole == pytest.approx(round(whole))
            kinds.append("content")
        else:  # form: the same words with one more (a repeat, a word past the target length, or one deleted)
            assert len(b) == len(a) + 1 and all(w in iter(b) for w in a)
            kinds.append("form")
    assert 0.15 < kinds.count("form") / len(kinds) < 0.35


def test_step_labels_positive_neutral_negative_and_none_after_the_first_error():
    steps = [(3, "+", 4), (None, "*", 2), (None, "-", 5)]
    right = "3 + 4 = 7\n7 * 2 = 14\n14 - 5 = 9\nThe answer is 9"
    assert A.label_solution(steps, right) == ([POSITIVE, POSITIVE, POSITIVE, POSITIVE], 1)  # the answer line too
    slip = "3 + 4 = 7\n7 * 2 = 15\n15 - 5 = 10\nThe answer is 10"  # right arithmetic after the slip: not labelled
    assert A.label_solution(steps, slip) == ([POSITIVE, NEGATIVE, NO_STEP, NO_STEP], 0)
    restated = "3 + 4 = 7\n3 + 4 = 7\n7 * 2 = 14\n3 + 4 = 7\n14 - 5 = 9\nThe answer is 9"  # right but useless
    assert A.label_solution(steps, restated) == ([POSITIVE, NEUTRAL, POSITIVE, NEUTRAL, POSITIVE, POSITIVE], 1)
    skipped = "3 + 4 = 7\n7 - 5 = 2\n2 * 2 = 4\nThe answer is 4"  # right arithmetic, wrong operation
    assert A.label_solution(steps, skipped) == ([POSITIVE, NEGATIVE, NO_STEP, NO_STEP], 0)
    garbled = "3 + 4 = 7\nseven times two\n14 - 5 = 9\nThe answer is 9"
    assert A.label_solution(steps, garbled) == (
        [POSITIVE, NEGATIVE, NO_STEP, NO_STEP],
        1,
    )  # the answer alone decides the ORM
    extra = "3 + 4 = 7\n7 * 2 = 14\n14 - 5 = 9\n9 + 0 = 9\nThe answer is 9"  # an operation the problem lacks
    assert A.label_solution(steps, extra)[0] == [POSITIVE, POSITIVE, POSITIVE, NEGATIVE, NO_STEP]
    # stopped early: every step it wrote is right, and the answer line that ends it too soon is the error
    assert A.label_solution(steps, "3 + 4 = 7\nThe answer is 7") == ([POSITIVE, NEGATIVE], 0)
    assert A.label_solution(steps, "3 + 4 = 7\n7 * 2 = 14\n14 - 5 = 9") == ([POSITIVE] * 3, 0)  # no answer line
    again = [(4, "-", 7), (None, "+", 7), (None, "-", 7)]  # its third step is its first again: progress, not neutral
    assert A.label_solution(again, "4 - 7 = -3\n-3 + 7 = 4\n4 - 7 = -3\nThe answer is -3")[0] == [POSITIVE] * 4
    assert A.check_step("12 - 5 = 7") is True and A.check_step("12 - 5 = 8") is False
    assert A.check_step("twelve") is None


def test_a_solution_with_a_wrong_answer_always_holds_a_negative_step():
    """Every wrong outcome is a process error somewhere: a slip, a skipped or invented
    operation, or an answer line that stops short (the PRM's product cannot rank a wrong
    answer as flawless)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        expression, steps = A.make_problem(rng, A.STEPS)
        solution = A.solve(steps, rng, error_prob=0.5, restate_prob=0.3).split("\n")
        cut = int(rng.integers(0, len(solution) - 1))  # drop one line: a step skipped, or the answer line's twin
        for text in ("\n".join(solution), "\n".join(solution[:cut] + solution[cut + 1 :])):
            labels, outcome = A.label_solution(steps, text)
            if A.final_answer(text) is not None and not outcome:
                assert NEGATIVE in labels, text


def test_problems_parse_back_from_their_prompts_and_sampled_completions_are_labelled():
    rng = np.random.default_rng(0)
    for cfg in (A.ArithmeticConfig(), A.STEPS):
        for _ in range(50):
            expression, steps = A.make_problem(rng, cfg)
            assert A.parse_problem(A.prompt(expression)) == steps
    assert A.parse_problem("Compute: -14 + 1\n") == [(-14, "+", 1)]
    assert A.label_completion("Compute: (2 - 5) - 3\n", "2 - 5 = -3\n-3 - 3 = -6\nThe answer is -6") == (
        [POSITIVE, POSITIVE, POSITIVE],
        1,
    )
    for bad in ("Compute: 3 +\n", "Compute: 3 / 4\n", "Compute: __import__('os')"):
        with pytest.raises(ValueError, match="not an arithmetic prompt"):
            A.parse_problem(bad)


def test_the_generators_data_pretraining_facts_and_solutions_all_wrong_or_all_right():
    low, high = A.value_range(A.STEPS)
    assert (low, high) == (1 - 4 * 9, 9 + 4 * 9)
    facts = A.pretrain_examples(3000, 0)
    lefts = [A.parse_problem(r["prompt"])[0][0] for r in facts]
    assert min(lefts) == low and max(lefts) == high
    assert all(r["outcome"] == 1 and r["step_labels"] == [POSITIVE, POSITIVE] for r in facts)  # step, answer
    for problem in A.format_examples(300, 1, correct=False) + A.format_examples(300, 1, correct=True):
        assert {op for _, op, _ in A.parse_problem(problem["prompt"])} <= {"+", "-"}
    wrong, right = A.format_examples(500, 2, correct=False), A.format_examples(500, 2, correct=True)
    assert all(r["outcome"] == 0 and r["step_labels"].count(NEGATIVE) == 1 for r in wrong)
    assert all(r["outcome"] == 1 and NEGATIVE not in r["step_labels"] for r in right)
    restating = np.mean([NEUTRAL in r["step_labels"] for r in right])
    assert 0.12 < restating < 0.28  # restate_prob 0.2
    with pytest.raises(ValueError, match="only \\+ and - are bounded"):
        A.value_range(A.ArithmeticConfig())


def test_the_verifiers_base_data_checks_equations_half_of_them_slipped_and_scores_them_exactly():
    checks = A.check_examples(2000, 0)
    for r in checks:
        assert r["prompt"].startswith(A.CHECK) and r["completion"] in A.VERDICTS
        (a, op, b), c = A.parse_problem("Compute: " + r["prompt"].removeprefix(A.CHECK).split(" =")[0])[0], r["answer"]
        assert r["prompt"] == f"{A.CHECK}{a} {op} {b} = {c}"  # the verdict follows c, where a PRM reads a step
        assert r["outcome"] == int(A.OPS[op](a, b) == c) and r["completion"] == A.VERDICTS[r["outcome"]]
        assert abs(A.OPS[op](a, b) - c) in (0, 1, 2)  # slips as the generator's: off by 1 or 2
        assert A.facts_reward(r["prompt"], r["completion"]) == 1.0
        assert A.facts_reward(r["prompt"], A.VERDICTS[1 - r["outcome"]]) == 0.0
    assert 0.45 < np.mean([r["outcome"] for r in checks]) < 0.55
    assert A.facts_reward("Check: 7 - 4 = 4", " wrong") == 1.0 and A.facts_reward("Check: 7 - 4 = 3", " wrong") == 0.0
    mixed = A.checked_examples(1001, 3)
    is_check = [r["prompt"].startswith(A.CHECK) for r in mixed]
    assert sum(is_check) == 500 and 0 < is_check[:20].count(True) < 20  # half, facts first when odd; shuffled
    facts = [r for r, c in zip(mixed, is_check, strict=True) if not c]
    assert all(A.facts_reward(r["prompt"], r["completion"]) == 1.0 for r in facts)
    with pytest.raises(ValueError, match="not a check prompt"):
        A.facts_reward("Check: 7 * 4 = 28", " right")


def test_arithmetic_examples_and_verifiable_reward():
    exs = A.examples(100, seed=0)
    assert exs == A.examples(100, seed=0)
    for ex in exs:
        assert A.verifiable_reward(ex["prompt"], ex["completion"]) == ex["outcome"]
        assert (NEGATIVE in ex["step_labels"]) == (ex["outcome"] == 0)
    assert 0.5 < np.mean([ex["outcome"] for ex in exs]) < 0.9
    assert A.verifiable_reward("Compute: (2 + 3) * 4\n", "2 + 3 = 5\n5 * 4 = 20\nThe answer is 20") == 1.0
    assert A.verifiable_reward("Compute: (2 + 3) * 4\n", "The answer is 21") == 0.0
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        A.verifiable_reward("Compute: __import__('os')", "The answer is 1")


@pytest.mark.parametrize("task", C.DIFFICULTY)
def test_classification_tasks_are_balanced_deterministic_and_correctly_labelled(task):
    rows = C.examples(task, 200, seed=1)
    assert rows == C.examples(task, 200, seed=1)
    assert sum(r["label"] for r in rows) == 100
    assert all(C.label(task, r["text"]) == r["label"] for r in rows)
    with pytest.raises(ValueError, match="classification task 'xor'"):
        C.examples("xor", 2, 0)


def test_content_probe_pairs_differ_in_one_word_and_only_in_coverage():
    cfg = S.SummarizationConfig()
    probes = S.content_probe_examples(200, seed=5)
    assert probes == S.content_probe_examples(200, seed=5) and len(probes) == 200
    for ex in probes:
        chosen, rejected, doc = ex["chosen"].split(), ex["rejected"].split(), ex["document"]
        assert len(chosen) == len(rejected) == cfg.target_len and len(set(chosen)) == len(set(rejected)) == len(chosen)
        differ = [i for i in range(len(chosen)) if chosen[i] != rejected[i]]
        assert len(differ) == 1 and rejected[differ[0]] in doc.split()
        salient = S.salient_words(doc, cfg.n_topics)
        assert chosen[differ[0]] in salient and rejected[differ[0]] not in salient
        np.testing.assert_allclose(S.gold_reward(doc, ex["chosen"]) - S.gold_reward(doc, ex["rejected"]), 0.25)
