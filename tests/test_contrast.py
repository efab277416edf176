"""Contrast terms: near misses written from a prompt, the softmax loss against them, and their place in a run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixgen
from pixgen.contrast import contrast_loss, near_misses
from pixgen.errors import ConfigError

SWAPS = [
    [["red"], ["blue"], ["green"]],
    [["circle", "disc"], ["square", "box"], ["cross", "plus sign"]],
    [["above", "over"], ["below", "under"]],
]


def test_near_misses_swap_one_word_per_class_to_each_other_meaning():
    assert near_misses("a red circle", SWAPS) == [
        "a blue circle", "a green circle", "a red square", "a red cross"]


def test_near_misses_exchange_two_words_of_one_class_but_never_return_the_prompt_or_a_synonym():
    misses = near_misses("a red disc above a blue box", SWAPS)
    assert "a blue disc above a red box" in misses  # colours exchanged: the attribution near miss
    assert "a red box above a blue disc" in misses  # shapes exchanged
    assert "a red disc below a blue box" in misses
    assert "a red circle above a blue box" not in misses  # disc -> circle is the same meaning
    assert "a red disc above a blue box" not in misses
    assert len(misses) == len(set(misses))


def test_near_misses_match_whole_words_case_insensitively_and_longest_first():
    assert near_misses("A RED plus sign", SWAPS) == ["A blue plus sign", "A green plus sign", "A RED circle",
                                                    "A RED square"]
    assert near_misses("a reddish circles overhead", SWAPS) == []  # no class word stands alone


def test_contrast_loss_is_the_softmax_cross_entropy_in_cosine_units():
    embeds = torch.tensor([[0.0, 0.0, 1.0]])  # orthogonal to every text: a uniform softmax over 3
    target, others = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    loss = contrast_loss(embeds, target, others, scale=50.0, weight=2.0)
    assert loss.item() == pytest.approx(2.0 * math.log(3) / 50.0)
    closer = contrast_loss(torch.tensor([[0.5, 0.0, 1.0]]), target, others, scale=50.0, weight=2.0)
    assert closer < loss


def test_what_the_prompt_shares_with_a_near_miss_gets_no_pull():
    shared, apart = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    target, other = F.normalize(shared + apart, dim=0), F.normalize(shared - apart, dim=0)
    embed = shared.clone().unsqueeze(0).requires_grad_(True)  # as like the prompt as its near miss
    contrast_loss(embed, target, other.unsqueeze(0), scale=10.0, weight=1.0).backward()
    grad = embed.grad[0]
    assert grad[0].abs() < 1e-6 and grad[2].abs() < 1e-6
    assert grad[1] < -0.1  # descending it moves the picture towards what tells the prompt apart


def test_a_run_adds_a_contrast_term_per_positive_text_prompt_and_it_changes_the_picture(tiny):
    res = pixgen.generate("a red circle | a blue square:-0.5", seed=0, **tiny,
                          contrast={"weight": 1.0, "swaps": SWAPS})
    terms = res.losses[-1]["terms"]
    assert "a red circle (contrast)" in terms and terms["a red circle (contrast)"] > 0
    assert not any("blue square (contrast)" in k for k in terms)  # a repelling term has no near misses to beat
    assert res.config["contrast"]["weight"] == 1.0
    plain = pixgen.generate("a red circle", seed=0, **tiny | {"output_dir": tiny["output_dir"] + "2"})
    assert not any("contrast" in k for k in plain.losses[-1]["terms"])
    # a step large enough to change codes within six steps (the smoke preset's moves too little to show it)
    runs = [pixgen.generate("a red circle", seed=0, **tiny | {"output_dir": tiny["output_dir"] + str(w)},
                            optim={"lr": 0.5}, contrast={"weight": w, "swaps": SWAPS}) for w in (0.0, 5.0)]
    assert not np.array_equal(np.asarray(runs[0].image), np.asarray(runs[1].image))


class _Clip:
    """A stand-in CLIP whose image embedding is the mean colour of each crop."""

    input_size, weight = 8, 1.0

    def encode_image(self, crops):
        return crops.mean(dim=(2, 3))


def test_contrast_terms_guide_steps_but_not_the_scoring_of_start_pictures():
    from pixgen.cutouts import MakeCutouts
    from pixgen.engine import Engine, Target

    target = Target("red", 0, torch.tensor([1.0, 0.0, 0.0]), others=torch.tensor([[0.0, 0.0, 1.0]]),
                    contrast_scale=10.0, contrast_weight=1.0)
    engine = Engine(torch.nn.Identity(), [_Clip()], [target], {8: MakeCutouts(8, 2, 1.0, [], 0.0)}, None, total=4)
    image = torch.rand(1, 3, 8, 8)
    assert engine.losses(image, [target])[0] == ["red"]
    assert engine.losses(image, [target], step=0)[0] == ["red", "red (contrast)"]


@pytest.mark.parametrize("contrast, says", [
    ({"weight": -1.0, "swaps": SWAPS}, "contrast.weight"),
    ({"weight": 1.0, "swaps": []}, "no word classes"),
    ({"weight": 1.0, "swaps": [[["red"]]]}, "two or more"),
    ({"weight": 1.0, "swaps": ["red"]}, "not a list of meanings"),
    ({"weight": 1.0, "swaps": [[["red"], []]]}, "no words"),
    ({"weight": 1.0, "scale": 0.0, "swaps": SWAPS}, "contrast.scale"),
])
def test_bad_contrast_settings_are_refused_with_a_fix(tiny, contrast, says):
    with pytest.raises(ConfigError, match=says):
        pixgen.generate("a red circle", **tiny, contrast=contrast)


def test_a_contrast_run_resumes_to_the_same_picture_from_its_stored_config(tiny):
    options = tiny | {"optim": {"lr": 0.5}, "contrast": {"weight": 2.0, "swaps": SWAPS}}
    straight = pixgen.generate("a red circle", seed=3, **options | {"output_dir": tiny["output_dir"] + "a"})
    first = pixgen.generate("a red circle", seed=3, **options | {"output_dir": tiny["output_dir"] + "b",
                                                                 "iterations": 3})
    resumed = pixgen.resume(first.run_dir, iterations=6, progress=False)  # reads the swaps back from run.yaml
    assert "a red circle (contrast)" in resumed.losses[-1]["terms"]
    assert np.array_equal(np.asarray(straight.image), np.asarray(resumed.image))


def test_an_article_before_a_changed_word_agrees_with_it():
    swaps = [[["red"], ["orange"]], [["apple"], ["pear"]]]
    assert near_misses("A red apple and an orange pear", swaps) == [
        "An orange apple and an orange pear", "A red apple and a red pear",  # one colour changed
        "An orange apple and a red pear",  # the colours exchanged
        "A red pear and an orange pear", "A red apple and an orange apple",  # one fruit changed
        "A red pear and an orange apple"]


def test_the_toy_contrast_preset_adds_near_misses_over_the_toy_preset():
    from omegaconf import OmegaConf

    from pixgen.config import resolve_preset

    swaps = OmegaConf.to_container(OmegaConf.load(resolve_preset("toy-contrast")).contrast.swaps)
    misses = near_misses("a red square to the left of a blue circle", swaps)
    assert "a blue square to the left of a red circle" in misses  # the colours exchanged
    assert "a red square to the right of a blue circle" in misses
    assert "an orange square to the left of a blue circle" in misses
    res = pixgen.generate("a red square to the left of a blue circle", model="toy", config="toy-contrast",
                          iterations=2, seed=0, write=False, progress=False, echo=False)
    assert res.config["contrast"]["weight"] == 0.5 and res.config["tv_weight"] == 10.0  # both presets apply
    assert any(k.startswith("a red square to the left of a blue circle") and k.endswith("(contrast)")
               for k in res.losses[-1]["terms"])


def test_a_prompt_without_near_misses_is_named_in_the_run_messages(tiny):
    res = pixgen.generate("a red circle | a lighthouse", seed=0, **tiny, write=False,
                          contrast={"weight": 1.0, "swaps": SWAPS})
    assert any("no contrast term for 'a lighthouse'" in m for m in res.messages)
    assert not any("'a red circle'" in m for m in res.messages)
    assert not any(k.startswith("a lighthouse") and k.endswith("(contrast)") for k in res.losses[-1]["terms"])
