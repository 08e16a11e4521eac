"""Several models (IMAGEGEN_MODELS): chosen per job on the page and the API, kept warm by a worker
within a memory budget, recorded on the run and in its PNG."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import NO_FAIR_USE_LIMITS, use_redis
from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.engine.catalog import OfferedModel, parse_models
from imagegen.engine.pipelines import get_engine, loaded_engines, model_load_count
from imagegen.engine.tiny import ensure_tiny_model
from imagegen.forms import GenerateForm
from imagegen.localstack import start_stack
from imagegen.models import JobStatus, Run

from .factories import RunFactory
from .test_integration import api, events_until_closed

FORM = {"prompt": "a fox", "steps": 20, "guidance_scale": 7.5, "width": 512, "height": 512}


def test_models_are_listed_as_source_equals_label_the_first_the_default():
    offered = parse_models("tiny=Test model; /models/sd-1.5=Stable Diffusion 1.5\nLykon/dreamshaper-8")
    assert list(offered.values()) == [
        OfferedModel("tiny", "tiny", "Test model"),
        # A folder goes by its name: users never see the server's paths.
        OfferedModel("sd-1.5", "/models/sd-1.5", "Stable Diffusion 1.5"),
        OfferedModel("Lykon/dreamshaper-8", "Lykon/dreamshaper-8", "Lykon/dreamshaper-8"),
    ]
    with pytest.raises(ValueError, match="Two models are called 'sd15'"):
        parse_models("/a/sd15=One; /b/sd15=Two")
    with pytest.raises(ValueError, match="No model is listed"):
        parse_models(" ; ")


def test_without_a_list_the_one_model_is_offered(settings):
    settings.IMAGEGEN_MODELS, settings.IMAGEGEN_MODEL = "", "/srv/models/realistic"
    assert [model.id for model in services.models_offered().values()] == ["realistic"]
    assert not GenerateForm().offers_models


@pytest.mark.django_db
def test_the_form_offers_each_model_and_refuses_others(settings, user_client):
    settings.IMAGEGEN_MODELS = "tiny=Test model; /models/sd15=Stable Diffusion 1.5"
    form = GenerateForm(FORM | {"model": "sd15"})
    assert form.is_valid() and form.cleaned_data["model"] == "sd15"
    default = GenerateForm(FORM)
    assert default.is_valid() and default.cleaned_data["model"] == "tiny"  # the first
    refused = GenerateForm(FORM | {"model": "/models/sd15"})
    assert not refused.is_valid() and "/models/sd15 is not one of the available choices" in refused.errors["model"][0]
    page = user_client.get("/").content.decode()
    assert '<option value="sd15" data-side="512">Stable Diffusion 1.5</option>' in page
    assert "/models/sd15" not in page
    user_client.post("/", FORM | {"model": "sd15"})
    assert Run.objects.get(owner=user_client.user).model == "sd15"


@pytest.mark.django_db
def test_variations_and_versions_keep_the_model_while_it_is_offered(settings):
    settings.IMAGEGEN_MODELS = "tiny=Test model; /models/sd15=Stable Diffusion 1.5"
    run = RunFactory(model="sd15", status=JobStatus.SUCCEEDED)
    assert services.run_variation_create(run=run).model == "sd15"
    settings.IMAGEGEN_MODELS = "tiny=Test model"
    assert services.run_variation_create(run=run).model == "tiny"


def test_a_worker_keeps_models_warm_within_its_memory_budget(tmp_path: Path):
    first = ensure_tiny_model(tmp_path / "cache")
    second, third = tmp_path / "tiny-copy", tmp_path / "tiny-copy-2"
    shutil.copytree(first, second)
    shutil.copytree(first, third)
    options = {"cache_dir": tmp_path / "cache", "device": "cpu"}
    one = get_engine(str(first), **options)
    size = one.weight_bytes()
    assert size > 0
    budget = int(2.5 * size)  # room for two of them
    # Room for both: both stay loaded, and going back to the first loads nothing.
    two = get_engine(str(second), memory_budget=budget, **options)
    loads = model_load_count()
    assert get_engine(str(first), memory_budget=budget, **options) is one and model_load_count() == loads
    assert {id(engine) for engine in loaded_engines()} >= {id(one), id(two)}
    # A third makes room: the one used longest ago goes (the second: the first was just asked for).
    three = get_engine(str(third), memory_budget=budget, **options)
    assert three.loaded and one.loaded and not two.loaded and model_load_count() == loads + 1
    assert two not in loaded_engines()
    # Going back to the second loads it again, in place of the first.
    two_again = get_engine(str(second), memory_budget=budget, **options)
    assert two_again.loaded and three.loaded and not one.loaded and model_load_count() == loads + 2


def test_each_run_is_made_by_the_model_it_names(redis_server, transactional_db, tmp_path, settings):
    # The second model is SDXL-shaped: both families through the API and a real worker.
    offered = "tiny=Test model; tiny-xl=Test SDXL model"
    url = redis_server.url(3)  # not the live stack's: its worker offers one model only
    use_redis(url)
    stack = start_stack(tmp_path, url, IMAGEGEN_MODELS=offered, **NO_FAIR_USE_LIMITS)
    try:
        settings.MEDIA_ROOT, settings.IMAGEGEN_MODELS = stack.media_root, offered
        token = services.api_token_create(username="two-models")
        runs = {}
        for model in ("tiny-xl", "tiny", None):
            body = {"prompt": "a (lighthouse:1.2)", "num_inference_steps": 3, "width": 128, "height": 96, "seed": 4}
            body |= {"clip_skip": 2} | ({"model": model} if model else {})
            _, answer = api(stack, "POST", "/api/generate", token, body)
            accepted = json.loads(answer)
            assert events_until_closed(accepted["ws_url"], token)[-1]["type"] == "job.result"
            run = runs[model] = Run.objects.get(pk=accepted["run_id"])
            assert (run.status, run.model) == (JobStatus.SUCCEEDED, model or "tiny")
            png = (stack.media_root / run.outputs.get().file.name).read_bytes()
            assert f"Size: 128x96, Model: {model or 'tiny'}, Clip skip: 2" in read_png_parameters(png)
            _, answer = api(stack, "GET", accepted["status_url"], token)
            assert json.loads(answer)["parameters"]["model"] == (model or "tiny")
        assert stack.worker_log_text().count("Loading model tiny-xl") == 1
        # A version of the SDXL run is made by the same model (its crop worked at SDXL's size).
        refine = {"type": "region", "payload": {"masks": [{"bbox": [16, 16, 40, 30], "prompt": "a door"}]}}
        status, answer = api(stack, "POST", f"/api/v1/runs/{runs['tiny-xl'].pk}/refine", token, refine)
        assert status == 201, answer
        version = json.loads(answer)
        assert events_until_closed(version["ws_url"], token)[-1]["type"] == "job.result"
        _, detail = api(stack, "GET", version["status_url"], token)
        _, refined = api(stack, "GET", json.loads(detail)["result"]["url"], token)
        assert "Model: tiny-xl" in read_png_parameters(refined)
    finally:
        stack.stop()
        use_redis(redis_server.url(1))
