import pytest

from anobench.benchmarks.config import flatten, list_presets, load_config
from anobench.benchmarks.errors import ConfigError


def test_presets_load():
    assert "quick" in list_presets()
    cfg = load_config("quick")
    assert cfg.data.root is None and cfg.segmenter.image_size % 32 == 0


def test_overrides_are_typed():
    cfg = load_config("quick", ["segmenter.epochs=3", "seeds=[1, 2]", "segmenter.lr=0.01"])
    assert cfg.segmenter.epochs == 3 and cfg.seeds == [1, 2] and cfg.segmenter.lr == 0.01
    assert load_config("quick", ["segmenter.lr=3e-4"]).segmenter.lr == 3e-4  # YAML 1.1 reads a string


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("segmenter.epoch=3", "unknown config key segmenter.epoch"),
        ("colour=red", "unknown config key colour"),
        ("segmenter.epochs=many", "segmenter.epochs: expected int"),
        ("segmenter.epochs=true", "segmenter.epochs: expected int, got a boolean"),
        ("seeds=3", "seeds: expected a list"),
        ("data.root=/definitely/not/here", "data.root: /definitely/not/here does not exist"),
        ("segmenter.image_size=100", "multiple of 32"),
        ("segmenter.selection=best", "segmenter.selection"),
        ("no-equals-sign", "expected KEY=VALUE"),
        ("genmetrics.metrics=[]", "genmetrics.enabled=false"),
        ("genmetrics.metrics=[psnr]", "genmetrics.metrics: unknown"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config("quick", [override])


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_flatten_uses_dotted_keys():
    flat = flatten(load_config("quick"))
    assert flat["segmenter.epochs"] == load_config("quick").segmenter.epochs
    assert "data.split" in flat


def test_paper_preset_needs_its_dataset(monkeypatch, tmp_path):
    monkeypatch.delenv("MVTEC_AD", raising=False)
    with pytest.raises(ConfigError, match="unset environment variable"):
        load_config("paper-mvtec")
    monkeypatch.setenv("MVTEC_AD", str(tmp_path))
    cfg = load_config("paper-mvtec")
    assert cfg.data.root == str(tmp_path)
    assert (cfg.segmenter.image_size, cfg.segmenter.base_width, cfg.segmenter.epochs) == (256, 64, 200)
    assert cfg.generation.n_per_defect == 500 and cfg.segmenter.selection == "last-epoch"
