import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.config import PairQualityConfig, flatten, list_presets, load_config
from anobench.benchmarks.errors import ConfigError
from anobench.benchmarks.metrics.defaults import PAIR_DEFAULTS


def test_presets_load():
    assert "quick" in list_presets()
    cfg = load_config("quick")
    assert cfg.data.root is None and cfg.segmenter.image_size % 32 == 0


def test_overrides_are_typed():
    cfg = load_config("quick", ["segmenter.epochs=3", "seeds=[1, 2]", "segmenter.lr=0.01"])
    assert cfg.segmenter.epochs == 3 and cfg.seeds == [1, 2] and cfg.segmenter.lr == 0.01
    assert load_config("quick", ["segmenter.lr=3e-4"]).segmenter.lr == 3e-4  # YAML 1.1 reads a string
    assert load_config("quick", ["segmenter.lr=1"]).segmenter.lr == 1.0  # an int is a valid float
    options = load_config("quick", ["generation.options.nsa.patch_size=[0.1, 0.2]"]).generation.options
    assert options["nsa"]["patch_size"] == [0.1, 0.2]  # validated, passed on as written (config hashes)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("segmenter.epoch=3", "unknown config key segmenter.epoch"),
        ("colour=red", "unknown config key colour"),
        ("segmenter.epoch=3", "known keys under segmenter: augment, base_width, batch_size, channels_last"),
        ("evaluation.detectors=[{name: padim, size: 3}]", "unknown config key evaluation.detectors[0].size"),
        ("segmenter.epochs=many", "segmenter.epochs: Input should be a valid integer (got 'many')"),
        ("segmenter.epochs=true", "segmenter.epochs: Input should be a valid integer (got True)"),
        ("segmenter.lr=fast", "segmenter.lr: Input should be a valid number"),
        ("seeds=3", "seeds: Input should be a valid array (got 3)"),
        ("data.categories=[nut, 3]", "data.categories[1]: Input should be a valid string"),
        ("data.root=/definitely/not/here", "data.root: /definitely/not/here does not exist"),
        ("segmenter.image_size=100", "multiple of 32"),
        ("segmenter.selection=best", "segmenter.selection"),
        ("no-equals-sign", "expected KEY=VALUE"),
        ("genmetrics.metrics=[]", "genmetrics.enabled=false"),
        ("genmetrics.metrics=[psnr]", "genmetrics.metrics: unknown"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("quick", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # an unknown generator, in the grid, the reference rows or the options
        (
            "generation.generators=[crop-paste, foo]",
            "generation.generators: no generator named foo; registered:",
        ),
        ("generation.reference=[real-fewshot, perlinn]", "generation.reference: no generator named perlinn"),
        ("generation.options.perlinn.beta_max=0.5", "generation.options.perlinn: no generator named perlinn"),
        # an unknown field
        (
            "generation.options.nsa.max_rotation=3",
            "unknown config key generation.options.nsa.max_rotation; "
            "known keys under generation.options.nsa: image_size, inside_object, mask_threshold",
        ),
        # a wrong type
        (
            "generation.options.crop-paste.max_rotation=abc",
            "generation.options.crop-paste.max_rotation: Input should be a valid number (got 'abc')",
        ),
        (
            "generation.options.dualanodiff.offline_unet_channels=[32, x]",
            "generation.options.dualanodiff.offline_unet_channels[1]: Input should be a valid integer",
        ),
        (
            "generation.options.perlin.inside_object=1",
            "generation.options.perlin.inside_object: Input should be",
        ),
        # a value the generator's Config rejects (its __post_init__)
        ("generation.options.nsa.tries=0", "generation.options.nsa.tries=0: must be at least 1"),
        (
            "generation.options.crop-paste.blend=alpha",
            "generation.options.crop-paste.blend='alpha': choose one of feather, poisson, hard",
        ),
        (
            "generation.options.perlin.texture_dir=/definitely/not/here",
            "generation.options.perlin.texture_dir=/definitely/not/here: not a folder",
        ),
        (
            "generation.options.cutpaste-scar.width=[5, 2]",
            "generation.options.cutpaste-scar.width=(5, 2): must be",
        ),
        (
            "generation.options.dualanodiff.resolution=30",
            "generation.options.dualanodiff.resolution=30: must be a multiple of 8",
        ),
    ],
)
def test_generator_options_are_validated_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("quick", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_several_rejected_options_are_one_line():
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["generation.options.nsa.tries=0", "generation.options.nsa.mask_threshold=0"])
    assert str(err.value) == (
        "generation.options.nsa.mask_threshold=0.0: must be > 0; "
        "generation.options.nsa.tries=0: must be at least 1"
    )


def test_generator_options_in_a_config_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("generation:\n  generators: [nsa]\n  options:\n    nsa: {tries: 3, rescale: [0.5, 2]}\n")
    assert load_config(path).generation.options == {"nsa": {"tries": 3, "rescale": [0.5, 2]}}
    path.write_text("generation:\n  options:\n    nsa: {tries: many}\n")
    with pytest.raises(ConfigError, match=r"^generation.options.nsa.tries: Input should be a valid integer"):
        load_config(path)


def test_cli_prints_the_option_key_and_exits_2(capsys):
    assert main(["run", "quick", "--set", "generation.options.nsa.tries=0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "generation.options.nsa.tries=0: must be at least 1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("generation.n_per_defect=0", "generation.n_per_defect=0: must be at least 1"),
        ("seeds=[]", "seeds=[]: list at least one seed"),
        ("seeds=[0, -1]", "seeds=[0, -1]: seeds must be >= 0"),
        ("seeds=[1, 2, 1]", "seeds=[1, 2, 1]: 1 is listed twice"),
        ("data.categories=[nut, brick, nut]", "data.categories=['nut', 'brick', 'nut']: nut is listed twice"),
        ("data.categories=[]", "data.categories=[]"),
        ("segmenter.lr=0", "segmenter.lr=0.0: must be > 0"),
        ("segmenter.lr=-1e-3", "segmenter.lr=-0.001: must be > 0"),
        ("segmenter.lr_gamma=0", "segmenter.lr_gamma=0.0: must be > 0"),
        ("segmenter.batch_size=0", "segmenter.batch_size=0: must be at least 1"),
        ("classifier.lr=0", "classifier.lr=0.0: must be > 0"),
        ("classifier.epochs=-2", "classifier.epochs=-2: must be at least 1"),
        ("classifier.image_size=0", "classifier.image_size=0: must be at least 1"),
        ("classifier.arch=resnet999", "classifier.arch='resnet999': not a timm model"),
        ("evaluation.detectors=[{name: padim, backbone: nonet}]", "backbone='nonet': not a timm model"),
        ("evaluation.detectors=[{name: padim, num_neighbors: 0}]", "num_neighbors=0: must be at least 1"),
        ("genmetrics.is_resize=-1", "genmetrics.is_resize=-1: must be >= 0"),
        ("runner.n_workers=0", "runner.n_workers=0: must be at least 1"),
    ],
)
def test_nonsense_values_fail_before_any_job(override, key, capsys):
    assert main(["run", "quick", "--set", override, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_grid_without_jobs_says_what_to_set(capsys):
    empty = ["generation.generators=[]", "generation.reference=[]", "evaluation.detectors=[]"]
    args = [arg for setting in empty for arg in ("--set", setting)]
    assert main(["run", "quick", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "0 jobs" in err and "generation.reference=[real-fewshot]" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("genmetrics.pair_quality.metrics=[bogus]", r"pair_quality.metrics: unknown \['bogus'\]"),
        ("genmetrics.pair_quality.metrics=[]", "pair_quality.metrics: empty"),
        (
            "genmetrics.pair_quality.detector_size=64",
            "unknown config key genmetrics.pair_quality.detector_size",
        ),
    ],
)
def test_pair_quality_settings_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[override])


def test_pair_quality_defaults_are_the_librarys_and_the_detector_follows_the_settings():
    defaults = PairQualityConfig()
    assert not defaults.enabled and defaults.feature_size == PAIR_DEFAULTS["feature_size"]
    config = load_config("quick", overrides=["genmetrics.pair_quality.detector_image_size=96"])
    pair_quality = config.genmetrics.pair_quality
    assert pair_quality.enabled and pair_quality.feature_size == 64  # quick's 64 px
    detector = pair_quality.detector()
    assert detector.image_size == 96 and detector.layers == PAIR_DEFAULTS["detector"]["layers"]
