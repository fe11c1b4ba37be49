"""Reference caption metrics: hand-computed BLEU and ROUGE-L, pycocoevalcap's values on fixed strings, no Java."""

import pytest

from spectral_llava.evaluation import caption_metrics as module
from spectral_llava.evaluation import score_captions

CANDIDATES = {"a": "the cat sat on the mat",
              "b": "A river crosses green fields, with a small village.",
              "c": ""}
REFERENCES = {"a": ["the cat is on the mat"],
              "b": ["Fields of arable land beside a river and a village."],
              "c": ["Dense coniferous forest."]}
# pycocoevalcap 1.2 (PTB tokenizer, Bleu(4), Meteor 1.5, Rouge, Cider) on the strings above, recorded
RECORDED = {"bleu_1": 0.5106188921750167, "bleu_2": 0.3468972268842973, "bleu_3": 0.20311049739354325,
            "bleu_4": 2.905933585955729e-05, "meteor": 0.23028730107112533, "rouge_l": 0.4168091168091168,
            "cider_d": 2.035078170342476}


def test_hand_computed_bleu_and_rouge_l(monkeypatch):
    """Candidate "the cat sat on the mat" vs "the cat is on the mat": clipped n-gram precisions 5/6, 3/5, 1/4, 0/3,
    equal lengths (no brevity penalty), so BLEU-1 = 5/6, BLEU-2 = sqrt(5/6 * 3/5), BLEU-3 = (5/6 * 3/5 * 1/4)^(1/3)
    = 0.5; ROUGE-L: LCS "the cat on the mat" = 5 words of 6 both ways -> F = 5/6. (Without Java, so without the JVM's
    start-up: both tokenisers split these words alike.)"""
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    result = score_captions({"a": CANDIDATES["a"]}, {"a": REFERENCES["a"]})
    assert result["bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert result["bleu_2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5, abs=1e-6)
    assert result["bleu_3"] == pytest.approx(0.5, abs=1e-6)
    assert result["bleu_4"] < 1e-3  # no matching 4-gram: only pycocoevalcap's 1e-15 smoothing is left
    assert result["rouge_l"] == pytest.approx(5 / 6)


def test_values_equal_pycocoevalcap_on_fixed_strings():
    result = score_captions(CANDIDATES, REFERENCES)
    assert result["tokenizer"] == "ptb" and result["unavailable"] == {}
    assert {name: result[name] for name in RECORDED} == pytest.approx(RECORDED, rel=1e-9)
    assert result["num_images"] == 3 and result["references_per_image"] == [1]


def test_without_java_meteor_is_unavailable_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    result = score_captions(CANDIDATES, REFERENCES)
    assert result["meteor"] is None
    assert result["unavailable"] == {"meteor": "METEOR 1.5 runs in Java and no `java` executable was found (make "
                                               "setup installs one)"}
    assert result["tokenizer"].startswith("regex")
    assert "no Java: METEOR unavailable" in caplog.text
    # the regex tokenisation agrees with PTB's on these plain sentences
    assert result["bleu_1"] == pytest.approx(RECORDED["bleu_1"]) and result["rouge_l"] == pytest.approx(
        RECORDED["rouge_l"])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"cover different images: \['b'\]"):
        score_captions({"a": "x", "b": "y"}, {"a": ["x"]})
    with pytest.raises(ValueError, match="a reference caption for every image"):
        score_captions({"a": "x"}, {"a": []})
