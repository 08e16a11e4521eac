"""The generation rules the page, the API and commands share."""

import pytest

from imagegen.forms import ApiGenerateForm, GenerateForm

VALID = {"prompt": "a red fox", "steps": 20, "guidance_scale": 7.5, "width": 512, "height": 512}


def test_a_picture_has_the_pixels_of_1024_squared_at_most_in_any_shape():
    for width, height in ((1024, 1024), (1216, 832), (1344, 768), (640, 1536)):
        assert GenerateForm({**VALID, "width": width, "height": height}).is_valid(), (width, height)
    form = GenerateForm({**VALID, "width": 1536, "height": 1024})
    assert form.errors["height"] == [
        "1536×1024 has more pixels than 1024×1024, the most a picture may have: choose a smaller size "
        "(the sizes SDXL models are made for, such as 1216×832 or 1344×768, fit)."
    ]


def test_valid_request_passes_and_seed_is_optional():
    form = GenerateForm(VALID)
    assert form.is_valid(), form.errors
    assert form.run_arguments()["seed"] is None
    assert form.run_arguments()["scheduler"] == "euler_a"
    assert form.run_arguments()["batch_size"] == 1  # left out: one image
    assert form.run_arguments()["clip_skip"] == 1


def test_a_batch_of_up_to_four_images():
    for batch_size in (1, 4):
        form = GenerateForm({**VALID, "batch_size": batch_size})
        assert form.is_valid(), form.errors
        assert form.run_arguments()["batch_size"] == batch_size


@pytest.mark.parametrize("scheduler", ["dpmpp_2m_karras", "dpmpp_sde_karras", "unipc", "heun", "lms", "lcm", "pndm"])
def test_the_samplers_a1_users_name_are_offered(scheduler):
    form = GenerateForm({**VALID, "scheduler": scheduler, "clip_skip": 2})
    assert form.is_valid(), form.errors
    assert (form.run_arguments()["scheduler"], form.run_arguments()["clip_skip"]) == (scheduler, 2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", "", "This field is required."),
        ("prompt", "   ", "This field is required."),
        ("prompt", "x" * 1001, "at most 1000 characters"),
        ("steps", 0, "greater than or equal to 1"),
        ("steps", 151, "less than or equal to 150"),
        ("steps", "many", "Enter a whole number."),
        ("guidance_scale", -1, "greater than or equal to 0"),
        ("guidance_scale", 30.5, "less than or equal to 30"),
        ("guidance_scale", "high", "Enter a number."),
        ("width", 500, "multiple of 8"),
        ("width", 56, "greater than or equal to 64"),
        ("height", 1544, "less than or equal to 1536"),
        ("seed", -1, "greater than or equal to 0"),
        ("seed", 2**32, "less than or equal to"),
        ("scheduler", "warp-drive", "Select a valid choice"),
        ("batch_size", 0, "greater than or equal to 1"),
        ("batch_size", 5, "less than or equal to 4"),
        ("batch_size", "two", "Enter a whole number."),
        ("clip_skip", 0, "greater than or equal to 1"),
        ("clip_skip", 13, "less than or equal to 12"),
        ("clip_skip", "two", "Enter a whole number."),
    ],
)
def test_each_rule_names_its_field(field, value, message):
    form = GenerateForm({**VALID, field: value})
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


def test_api_form_uses_the_api_names():
    form = ApiGenerateForm({**VALID, "num_inference_steps": 151})
    assert not form.is_valid()
    assert "num_inference_steps" in form.errors
    form = ApiGenerateForm({**VALID, "num_inference_steps": 30})
    assert form.is_valid(), form.errors
    assert form.run_arguments()["steps"] == 30
