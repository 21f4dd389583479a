"""Tables for the reflection ("aha") counter logged during GRPO."""
import pytest

from backend.rewards.reflection import (DEFAULT_MARKERS, check_markers, count_reflections,
                                        reflection_stats)


@pytest.mark.parametrize(
    "completion, markers, expected",
    [
        ("<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>", DEFAULT_MARKERS, 0),  # none
        ("<think>3+8+0=11,check:11,7+5+1=13</think>", DEFAULT_MARKERS, 1),  # tiny verification
        ("<think>3+8+0=12,wait,11,7+5+1=13</think>", DEFAULT_MARKERS, 1),  # tiny correction
        ("<think>1+1+0=3,wait,2,check:2</think>", DEFAULT_MARKERS, 2),  # both, counted apart
        ("Wait, wait. Wait. That's an aha moment", DEFAULT_MARKERS, 3),  # case-insensitive
        ("WAIT... let me VERIFY", DEFAULT_MARKERS, 2),  # upper case
        ("we await the result", DEFAULT_MARKERS, 0),  # a word containing a marker is not one
        ("waiting for it", DEFAULT_MARKERS, 0),  # ... nor is a longer word
        ("Let me check: 2+2=4", DEFAULT_MARKERS, 1),  # overlapping markers count once
        ("let me\ncheck this", DEFAULT_MARKERS, 1),  # a multi-word marker across a line break
        ("a check without a colon", DEFAULT_MARKERS, 0),  # "check:" needs its colon
        ("hmm, hmm, actually", ["hmm", "actually"], 3),  # custom markers
        ("HMM", ["hmm"], 1),  # custom markers are case-insensitive too
        ("3+8+0=12,wait,11", ["check:"], 0),  # only the configured markers count
        ([{"role": "assistant", "content": "Wait, no."}], DEFAULT_MARKERS, 1),  # chat messages
        ("", DEFAULT_MARKERS, 0),  # empty completion
    ],
)
def test_count_reflections(completion, markers, expected):
    assert count_reflections(completion, markers) == expected


def test_reflection_stats_rate_and_markers_per_completion():
    completions = ["a wait, b wait,", "check:1", "nothing", "nothing"]
    assert reflection_stats(completions, DEFAULT_MARKERS) == {
        "reflection_rate": pytest.approx(0.5), "reflection_markers": pytest.approx(0.75)}
    assert reflection_stats([], DEFAULT_MARKERS) == {"reflection_rate": 0.0,
                                                     "reflection_markers": 0.0}


@pytest.mark.parametrize("markers", [[], [""], ["wait", "  "], "wait"])
def test_bad_marker_lists_are_refused_with_how_to_fix(markers):
    with pytest.raises(ValueError, match="e.g. wait,verify,let me check"):
        check_markers(markers)
