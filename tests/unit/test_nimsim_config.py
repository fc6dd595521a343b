"""Pure-function tests: configuration, tag conventions, readiness schedule, tokens, answers."""

from __future__ import annotations

import pytest

from nimsim import Faults, SimConfig, fault_from_image_tag, model_from_image
from nimsim.config import image_tag
from nimsim.generate import CANNED_ANSWERS, complete, natural_answer
from nimsim.schema import Message
from nimsim.state import FLAPPING, LOADING, readiness_at
from nimsim.tokens import count_prompt_tokens, count_tokens, tokenize


def test_from_env_defaults() -> None:
    config = SimConfig.from_env({})
    assert config == SimConfig()
    assert config.model == "meta/llama-3.1-8b-instruct"
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    # Was 8192: a real Llama 3.1 NIM serves the model's own 131072-token context.
    assert config.max_model_len is None
    assert config.context_len == 131072
    assert config.load_delay == 2.0
    assert (config.cache_path, config.path_map, config.download_fault) == (None, (), None)
    assert config.faults == Faults()
    assert config.owner == "meta"


def test_from_env_reads_every_variable() -> None:
    config = SimConfig.from_env(
        {
            "NIM_SERVED_MODEL_NAME": "acme/tiny",
            "NIM_SERVER_PORT": "9000",
            "NIMSIM_HOST": "127.1.0.7",
            "NIM_MAX_MODEL_LEN": "4096",
            "NIMSIM_LOAD_DELAY": "0.5",
            "NIMSIM_FAULT": "slow, flapping,crash-after:7",
            "NIMSIM_FLAP_PERIOD": "1.5",
            "NIMSIM_SLOW_SECONDS": "0.25",
            "NIMSIM_WRONG_MODEL": "other/model",
            "NIMSIM_TOKEN_DELAY": "0.01",
            "NIMSIM_OWNED_BY": "someone",
        }
    )
    assert config == SimConfig(
        model="acme/tiny",
        host="127.1.0.7",
        port=9000,
        max_model_len=4096,
        load_delay=0.5,
        faults=Faults(slow=True, flapping=True, crash_after=7.0),
        flap_period=1.5,
        slow_seconds=0.25,
        wrong_model_name="other/model",
        token_delay=0.01,
        owned_by="someone",
    )
    assert config.owner == "someone"


def test_model_precedence() -> None:
    image = "nvcr.io/nim/mistralai/mistral-7b-instruct:1.0"
    env = {"NIM_SERVED_MODEL_NAME": "a/one", "NIMSIM_MODEL": "b/two", "NIMSIM_IMAGE": image}
    assert SimConfig.from_env(env).model == "a/one"
    del env["NIM_SERVED_MODEL_NAME"]
    assert SimConfig.from_env(env).model == "b/two"
    del env["NIMSIM_MODEL"]
    assert SimConfig.from_env(env).model == "mistralai/mistral-7b-instruct"
    assert SimConfig.from_env(env).owner == "mistralai"


@pytest.mark.parametrize(
    ("image", "model"),
    [
        ("nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3", "meta/llama-3.1-8b-instruct"),
        ("nvcr.io/nim/meta/llama-3.1-8b-instruct", "meta/llama-3.1-8b-instruct"),
        ("localhost:5000/nim/meta/llama3-8b:latest", "meta/llama3-8b"),
        ("localhost/nim/meta/llama3-8b:1", "meta/llama3-8b"),
        ("registry.local/nvidia/nemotron:2@sha256:abcd", "nvidia/nemotron"),
        ("nim/meta/llama-3.1-70b-instruct:1.0-slow", "meta/llama-3.1-70b-instruct"),
        ("meta/llama-3.1-8b-instruct:1.3.3", "meta/llama-3.1-8b-instruct"),
        ("nimsim:dev", "nimsim"),
    ],
)
def test_model_from_image(image: str, model: str) -> None:
    assert model_from_image(image) == model


@pytest.mark.parametrize(
    ("tag", "overrides"),
    [
        ("1.3.3", {}),
        ("latest", {}),
        ("1.3.3-never-ready", {"NIMSIM_FAULT": "never-ready"}),
        ("1.3.3-wrong-model", {"NIMSIM_FAULT": "wrong-model"}),
        ("1.0-flapping", {"NIMSIM_FAULT": "flapping"}),
        ("slow", {"NIMSIM_FAULT": "slow"}),
        ("1.0-crash-after-3", {"NIMSIM_FAULT": "crash-after:3"}),
        ("2.0-load-5s", {"NIMSIM_LOAD_DELAY": "5"}),
        ("1.0-load-0.5s", {"NIMSIM_LOAD_DELAY": "0.5"}),
        (
            "1.0-slow-load-1s-crash-after-2.5",
            {"NIMSIM_FAULT": "slow,crash-after:2.5", "NIMSIM_LOAD_DELAY": "1"},
        ),
        ("1.0_flapping.wrong-model", {"NIMSIM_FAULT": "flapping,wrong-model"}),
        ("1.0-slowest", {}),
        ("1.0-download-5s", {"NIMSIM_DOWNLOAD_DELAY": "5"}),
        ("1.0-download-0.5s-load-2s", {"NIMSIM_DOWNLOAD_DELAY": "0.5", "NIMSIM_LOAD_DELAY": "2"}),
        ("1.0-auth-fail", {"NIMSIM_DOWNLOAD_FAULT": "auth-fail"}),
        ("1.0-network-fail", {"NIMSIM_DOWNLOAD_FAULT": "network-fail"}),
        ("1.0-disk-full", {"NIMSIM_DOWNLOAD_FAULT": "disk-full"}),
        # "slow-download" is a download fault; it must not also slow every response.
        ("1.0-slow-download", {"NIMSIM_DOWNLOAD_FAULT": "slow-download"}),
        (
            "1.0-slow-download-slow",
            {"NIMSIM_DOWNLOAD_FAULT": "slow-download", "NIMSIM_FAULT": "slow"},
        ),
        ("1.0-diskfull", {}),
        ("nvcr.io/nim/slow/model:1.0", {}),
        ("nvcr.io/nim/meta/model:1.0-never-ready", {"NIMSIM_FAULT": "never-ready"}),
    ],
)
def test_fault_from_image_tag(tag: str, overrides: dict[str, str]) -> None:
    assert fault_from_image_tag(tag) == overrides


def test_tag_overrides_yield_valid_config() -> None:
    env = fault_from_image_tag("1.0-flapping-crash-after-3-load-0.5s")
    config = SimConfig.from_env(env)
    assert config.faults == Faults(flapping=True, crash_after=3.0)
    assert config.load_delay == 0.5


def test_from_env_applies_image_tag_but_explicit_env_wins() -> None:
    image = "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3-never-ready-load-5s"
    config = SimConfig.from_env({"NIMSIM_IMAGE": image})
    assert config.faults == Faults(never_ready=True)
    assert config.load_delay == 5.0
    config = SimConfig.from_env(
        {"NIMSIM_IMAGE": image, "NIMSIM_FAULT": "slow", "NIMSIM_LOAD_DELAY": "1"}
    )
    assert config.faults == Faults(slow=True)
    assert config.load_delay == 1.0


def test_image_tag() -> None:
    assert image_tag("localhost:5000/a/b:1.0-slow") == "1.0-slow"
    assert image_tag("localhost:5000/a/b") == ""
    assert image_tag("a/b:1@sha256:00") == "1"


def test_wrong_model_changes_served_id_and_owner() -> None:
    config = SimConfig(faults=Faults(wrong_model=True))
    assert config.model == "meta/llama-3.1-8b-instruct"
    assert config.served_model == "nimsim/wrong-model"
    assert config.owner == "nimsim"


def test_faults_round_trip_through_text() -> None:
    faults = Faults.parse("never-ready,flapping,slow,wrong-model,crash-after:2")
    assert faults == Faults(True, True, True, True, 2.0)
    assert Faults.parse(str(faults)) == faults
    assert str(Faults()) == ""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NIMSIM_FAULT": "never_ready"}, "unknown fault 'never_ready'"),
        ({"NIMSIM_FAULT": "crash-after"}, "needs seconds"),
        ({"NIMSIM_FAULT": "crash-after:soon"}, "crash-after must be a number"),
        ({"NIMSIM_FAULT": "slow:3"}, "unknown fault"),
        ({"NIM_SERVER_PORT": "http"}, "NIM_SERVER_PORT must be an integer"),
        ({"NIM_SERVER_PORT": "70000"}, "port must be 0..65535"),
        ({"NIM_MAX_MODEL_LEN": "0"}, "NIM_MAX_MODEL_LEN must be >= 1"),
        ({"NIMSIM_LOAD_DELAY": "-1"}, "NIMSIM_LOAD_DELAY must be a finite number"),
        ({"NIMSIM_LOAD_DELAY": "nan"}, "NIMSIM_LOAD_DELAY must be a finite number"),
        ({"NIMSIM_FLAP_PERIOD": "0"}, "NIMSIM_FLAP_PERIOD"),
        ({"NIMSIM_FAULT": "disk-full"}, "download faults go in NIMSIM_DOWNLOAD_FAULT"),
        ({"NIMSIM_DOWNLOAD_FAULT": "slow"}, "NIMSIM_DOWNLOAD_FAULT must be one of auth-fail"),
        ({"NIMSIM_DOWNLOAD_DELAY": "-1"}, "NIMSIM_DOWNLOAD_DELAY must be a finite number"),
        ({"NIMSIM_PATH_MAP": "{nope"}, "NIMSIM_PATH_MAP is not valid JSON"),
        ({"NIMSIM_PATH_MAP": "[]"}, "NIMSIM_PATH_MAP must be a JSON object"),
        ({"NIMSIM_PATH_MAP": '{"/a": 1}'}, r"NIMSIM_PATH_MAP\['/a'\] must be a string path"),
        ({"NIMSIM_PATH_MAP": '{"a": "/b"}'}, "must be an absolute container path"),
        ({"NIMSIM_PATH_MAP": '{"/a": "b"}'}, "must be an absolute host path"),
        ({"NIMSIM_GPU_COUNT": "0"}, "NIMSIM_GPU_COUNT must be >= 1"),
        ({"NIMSIM_MAX_CONCURRENCY": "0"}, "NIMSIM_MAX_CONCURRENCY must be >= 1"),
    ],
)
def test_from_env_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimConfig.from_env(env)


def test_readiness_schedule_loading_then_ready() -> None:
    config = SimConfig(load_delay=2.0)
    assert readiness_at(config, 0.0) == (False, LOADING)
    assert readiness_at(config, 1.99) == (False, LOADING)
    assert readiness_at(config, 2.0).ready
    assert readiness_at(config, 1e6).ready


def test_readiness_schedule_never_ready() -> None:
    config = SimConfig(load_delay=0.0, faults=Faults(never_ready=True))
    assert readiness_at(config, 1e6) == (False, LOADING)


def test_readiness_schedule_flapping() -> None:
    config = SimConfig(load_delay=1.0, flap_period=2.0, faults=Faults(flapping=True))
    states = [readiness_at(config, t).ready for t in (0.5, 1.0, 2.9, 3.0, 4.9, 5.0, 7.5)]
    assert states == [False, True, True, False, False, True, False]
    assert readiness_at(config, 3.5).reason == FLAPPING


@pytest.mark.parametrize(
    "text",
    ["", "What is the capital of France?", "  leading and trailing  ", "a\n\nb\tc", "é—ü!?"],
)
def test_tokenize_is_lossless(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_token_counts() -> None:
    assert tokenize("Once upon a time.") == ["Once", " upon", " a", " time", "."]
    assert count_tokens("1, 2, 3") == 5
    assert count_tokens("x" * 25) == 3  # long runs are split, as subword tokenizers do
    # Matches the usage in the NIM API reference for this prompt.
    assert count_prompt_tokens(["What is the capital of France?"]) == 15
    assert count_prompt_tokens(["a", "b"]) == 4 + 2 * 5


def _ask(question: str) -> str:
    return natural_answer([Message("user", question)])


def test_canned_answers_match_loosely() -> None:
    assert _ask("What is the capital of France?") == "The capital of France is Paris."
    assert _ask("  what is the CAPITAL of france ") == "The capital of France is Paris."
    assert _ask("Count from 1 to 10") == "1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    conversation = [
        Message("system", "Be brief."),
        Message("user", "Count from 1 to 10"),
        Message("assistant", "Sure."),
    ]
    assert natural_answer(conversation) == CANNED_ANSWERS["count from 1 to 10"]


def test_generic_answer_is_deterministic_long_and_prompt_dependent() -> None:
    first = _ask("Explain Kubernetes in detail")
    assert first == _ask("Explain Kubernetes in detail")
    assert first != _ask("Explain machine learning")
    assert count_tokens(first) >= 300
    history = [Message("system", "Be terse."), Message("user", "Explain Kubernetes in detail")]
    assert natural_answer(history) != first


def test_complete_natural_finish_counts_end_of_sequence() -> None:
    answer = "The capital of France is Paris."
    assert complete(answer, 50) == complete(answer, 8)
    result = complete(answer, 50)
    assert (result.content, result.finish_reason, result.completion_tokens) == (answer, "stop", 8)


def test_complete_truncates_at_max_tokens() -> None:
    answer = "The capital of France is Paris."
    assert complete(answer, 7).content == answer
    assert complete(answer, 7).finish_reason == "length"
    result = complete(answer, 3)
    assert (result.content, result.finish_reason, result.completion_tokens) == (
        "The capital of",
        "length",
        3,
    )


def test_complete_stop_sequences() -> None:
    answer = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    result = complete(answer, 100, [" 5", "five"])
    assert (result.content, result.finish_reason, result.completion_tokens) == (
        "1, 2, 3, 4,",
        "stop",
        9,
    )
    assert complete(answer, 100, ["3, 4", ", 2"]).content == "1"
    assert complete(answer, 100, ["1"]).content == ""
    assert complete(answer, 100, ["", "nothing"]).content == answer
    assert complete(answer, 3, [" 5"]).finish_reason == "length"


def test_from_env_reads_the_nim_cache_settings() -> None:
    config = SimConfig.from_env(
        {
            "NIM_CACHE_PATH": "/models",
            "NIM_MODEL_PROFILE": "vllm-fp16-tp1",
            "NIM_PEFT_SOURCE": "/loras",
            "NGC_API_KEY": "nvapi-a",
            "NIMSIM_DOWNLOAD_DELAY": "0.5",
            "NIMSIM_DOWNLOAD_FAULT": "network-fail",
            "NIMSIM_SLOW_DOWNLOAD_SECONDS": "4",
            "NIMSIM_GPU_PRODUCT": "l40s",
            "NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b",
            "NIMSIM_MAX_CONCURRENCY": "8",
        }
    )
    assert (config.cache_path, config.model_profile, config.peft_source) == (
        "/models",
        "vllm-fp16-tp1",
        "/loras",
    )
    assert (config.ngc_api_key, config.download_delay, config.download_fault) == (
        "nvapi-a",
        0.5,
        "network-fail",
    )
    assert (config.slow_download_seconds, config.gpu_product, config.gpu_count) == (4.0, "L40S", 2)
    assert config.max_concurrency == 8
    assert "nvapi-a" not in repr(config)


def test_ngc_cli_api_key_wins_as_in_nim() -> None:
    env = {"NGC_API_KEY": "nvapi-b", "NGC_CLI_API_KEY": "nvapi-c"}
    assert SimConfig.from_env(env).ngc_api_key == "nvapi-c"


def test_gpu_count_defaults() -> None:
    assert SimConfig.from_env({}).gpu_count == 1
    assert SimConfig.from_env({"NVIDIA_VISIBLE_DEVICES": "all"}).gpu_count == 1
    assert SimConfig.from_env({"NVIDIA_VISIBLE_DEVICES": "0,1,2,3"}).gpu_count == 4
    assert (
        SimConfig.from_env({"NVIDIA_VISIBLE_DEVICES": "0,1", "NIMSIM_GPU_COUNT": "8"}).gpu_count
        == 8
    )


def test_cache_path_defaults_to_nims_only_when_modelling_a_container() -> None:
    assert SimConfig.from_env({}).cache_path is None
    mapped = SimConfig.from_env({"NIMSIM_PATH_MAP": '{"/data": "/tmp/data"}'})
    assert mapped.cache_path == "/opt/nim/.cache"


def test_host_path_uses_the_longest_matching_prefix() -> None:
    config = SimConfig.from_env(
        {
            "NIMSIM_PATH_MAP": (
                '{"/opt/nim/.cache": "/lab/pvc-1", "/opt/nim/.cache/loras": "/lab/cm-2",'
                ' "/": "/lab/rootfs"}'
            )
        }
    )
    assert str(config.host_path("/opt/nim/.cache")) == "/lab/pvc-1"
    assert str(config.host_path("/opt/nim/.cache/ngc/hub")) == "/lab/pvc-1/ngc/hub"
    assert str(config.host_path("/opt/nim/.cache/loras/a")) == "/lab/cm-2/a"
    assert str(config.host_path("/opt/nim/.cache2/x")) == "/lab/rootfs/opt/nim/.cache2/x"
    assert str(config.host_path("/opt/nim/.cache/../x")) == "/lab/rootfs/opt/nim/x"
    assert str(config.host_path("/")) == "/lab/rootfs"


def test_host_path_is_identity_when_nothing_matches() -> None:
    config = SimConfig.from_env({"NIMSIM_PATH_MAP": '{"/data": "/tmp/d"}'})
    assert str(config.host_path("/opt/nim/.cache")) == "/opt/nim/.cache"
    assert str(config.host_path("/data2")) == "/data2"
    assert str(SimConfig().host_path("/x/y")) == "/x/y"


def test_an_empty_path_map_still_means_a_container() -> None:
    config = SimConfig.from_env({"NIMSIM_PATH_MAP": "{}"})
    assert (config.in_container, config.path_map) == (True, ())
    assert config.cache_path == "/opt/nim/.cache"
    assert not SimConfig.from_env({}).in_container


def test_read_only_paths() -> None:
    config = SimConfig.from_env({"NIMSIM_READ_ONLY_PATHS": '["/opt/nim/.cache"]'})
    assert config.is_read_only("/opt/nim/.cache/ngc")
    assert not config.is_read_only("/opt/nim/.cache2")
    with pytest.raises(ValueError, match="NIMSIM_READ_ONLY_PATHS must be a JSON array"):
        SimConfig.from_env({"NIMSIM_READ_ONLY_PATHS": '"/x"'})
