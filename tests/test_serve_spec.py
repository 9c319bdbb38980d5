"""The service spec, route journal, unit rendering and probe parsing: pure rules, in-process."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.errors import NotReady, SpecError, Unavailable
from builder.serve import endpoint, gpu, probe, route
from builder.serve.spec import load_service, service_from_mapping
from builder.serve.unit import UnitRequest, render_sh, render_systemd, systemd_quote
from tests.conftest import ROOT

BASE = {
    "name": "querylake-llm", "model": "Qwen/Qwen2.5-7B-Instruct", "route-file": "deploy/llm.env",
    "vllm": {"tensor-parallel-size": 2, "gpu-memory-utilization": 0.85},
    "env": {"CUDA_VISIBLE_DEVICES": "0,1"},
    "slots": {"blue": {"port": 8001}, "green": {"port": 8002}},
}


def test_the_shipped_service_spec_is_valid_and_serves_qwen_on_two_gpus() -> None:
    svc = load_service(ROOT / "envs" / "service.toml")
    green = svc.slot("green")
    assert svc.served_model_name == "querylake-llm" and svc.startup_timeout == 900
    assert svc.serve_argv("/rt/bin/vllm", green) == [
        "/rt/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--host", "127.0.0.1", "--port", "8002",
        "--served-model-name", "querylake-llm", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.85",
        "--max-model-len", "8192"]
    assert green.env == {"CUDA_VISIBLE_DEVICES": "0,1"} and svc.base_url(green) == "http://127.0.0.1:8002/v1"


def test_a_slot_overrides_vllm_and_env() -> None:
    data = {**BASE, "slots": {"blue": {"port": 8001}, "green": {
        "port": 8002, "vllm": {"tensor-parallel-size": 1}, "env": {"CUDA_VISIBLE_DEVICES": "1"}}}}
    svc = service_from_mapping(data)
    g, b = svc.slot("green"), svc.slot("blue")
    assert (g.vllm.tensor_parallel_size, g.vllm.gpu_memory_utilization, g.target_devices()) == (1, 0.85, ["1"])
    assert (b.vllm.tensor_parallel_size, b.target_devices()) == (2, ["0", "1"])


def test_every_problem_at_once_with_dotted_paths_and_did_you_mean() -> None:
    data = {
        "name": "QueryLake", "model": "./models/qwen", "route-file": "deploy/llm.env", "startup_timout": 10,
        "api-key-file": "keys.env",
        "vllm": {"tensor-parallel-size": 0, "gpu-memory-utilization": 1.5, "args": ["--port=9000", "--enforce-eager"]},
        "env": {"HF_TOKEN": "hf_abc", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"},
        "slots": {"blue": {"port": 8001, "env": {"CUDA_VISIBLE_DEVICES": "0"}}, "green": {"port": 8001, "prot": 1},
                  "Red": {"port": 70000}},
    }
    with pytest.raises(SpecError) as ei:
        service_from_mapping(data, "envs/service.toml")
    got = ei.value.problems
    want = [
        "envs/service.toml: startup_timout: unknown key (did you mean 'startup-timeout'?)",
        "envs/service.toml: name: must be lowercase letters, digits, '-', got 'QueryLake'",
        "envs/service.toml: api-key-file: must be an absolute path (a systemd EnvironmentFile), got 'keys.env'",
        "envs/service.toml: vllm.tensor-parallel-size: must be greater than 0, got 0",
        "envs/service.toml: vllm.gpu-memory-utilization: must be a fraction in (0, 1], got 1.5",
        "envs/service.toml: vllm.args[0]: --port is set by builder from the spec; use the spec's key instead",
        "envs/service.toml: model: must be a Hugging Face id (org/name) or an absolute path, got './models/qwen'",
        "envs/service.toml: api-key-file: needs api-key-env: the variable the file defines",
        "envs/service.toml: env.HF_TOKEN: looks like a secret: never put secrets in the spec; name the variable "
        "that holds it with api-key-env (and api-key-file for the unit)",
        "envs/service.toml: env.CUDA_DEVICE_ORDER: is set by builder; remove it",
        "envs/service.toml: slots.green.prot: unknown key (did you mean 'port'?)",
        "envs/service.toml: slots.Red: slot names are lowercase letters, digits, '-'",
        "envs/service.toml: slots.Red.port: must be a TCP port (1-65535), got 70000",
    ]
    assert got == want


def test_tensor_parallel_size_must_fit_the_visible_gpus_and_ports_are_unique() -> None:
    data = {**BASE, "slots": {"blue": {"port": 8001}, "green": {"port": 8001, "env": {"CUDA_VISIBLE_DEVICES": "1"}}}}
    with pytest.raises(SpecError) as ei:
        service_from_mapping(data, "s.toml")
    assert ei.value.problems == [
        "s.toml: slots.green: tensor-parallel-size 2 needs 2 GPUs but CUDA_VISIBLE_DEVICES = '1' names 1",
        "s.toml: slots.green.port: 8001 is also the port of slot 'blue'",
    ]


def test_a_broken_spec_is_one_message_and_exit_2_through_the_cli(tmp_path: Path) -> None:
    from tests.conftest import write_project
    from tests.helpers.cli import builder_cmd

    proj = write_project(tmp_path / "p", "http://127.0.0.1:9/simple")
    (proj / "envs" / "service.toml").write_text('name = "x"\nmodel = "m"\nroute-file = "r"\nhots = "h"\n')
    r = builder_cmd("serve", "status", cwd=proj)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "builder: error: 2 problems in spec:",
        f"  {proj}/envs/service.toml: hots: unknown key (did you mean 'host'?)",
        f"  {proj}/envs/service.toml: slots: required key is missing",
        "fix the service spec and run the command again",
    ]


# --------------------------------------------------------------------------- GPU memory


def _gpus(free0: int, free1: int) -> list[gpu.GpuMemory]:
    ada = "NVIDIA RTX 6000 Ada Generation"
    return [gpu.GpuMemory("0", "GPU-a", ada, 49140, free0), gpu.GpuMemory("1", "GPU-b", ada, 49140, free1)]


def test_two_slots_of_one_model_do_not_fit_on_two_48gb_gpus() -> None:
    svc = service_from_mapping(BASE)
    # blue (production) holds 0.85 x 49140 MiB on each GPU: about 7 GB are left.
    with pytest.raises(NotReady) as ei:
        gpu.check_gpu_memory(svc, svc.slot("green"), _gpus(7200, 7200))
    msg = ei.value.line()
    assert "GPU 0 (NVIDIA RTX 6000 Ada Generation) has 7200 MiB free of 49140 MiB, needs 0.85 x 49140 = 41769 MiB" \
        in msg and "GPU 1 (" in msg
    assert "at most 0.14 fits now" in msg and "planned stop of the old slot" in msg
    assert gpu.check_gpu_memory(svc, svc.slot("green"), _gpus(41769, 48000)).startswith("GPU 0: 41769 of")
    with pytest.raises(NotReady):  # one MiB short on one GPU is short
        gpu.check_gpu_memory(svc, svc.slot("green"), _gpus(41768, 48000))
    with pytest.raises(NotReady, match="wants GPU 1 but nvidia-smi shows 0"):
        gpu.check_gpu_memory(svc, svc.slot("green"), _gpus(48000, 48000)[:1])
    by_uuid = service_from_mapping({**BASE, "env": {"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-a"}})
    assert gpu.check_gpu_memory(by_uuid, by_uuid.slot("green"), _gpus(48000, 47000)) == (
        "GPU 1: 47000 of 49140 MiB free; GPU 0: 48000 of 49140 MiB free")


# --------------------------------------------------------------------------- route journal


def _e(i: str, action: str, to: str | None, prev: str | None = None, restores: str | None = None) -> route.Entry:
    r = route.Route(f"http://h:{to}/v1", "m", to) if to else None
    return route.Entry(i, "t", action, r, None, prev, restores)


def test_rollback_is_an_undo_through_the_journal_never_a_slot_number() -> None:
    # init prod -> set blue -> set green -> rollback (blue) -> rollback (prod) -> set green -> rollback (prod)
    j = [_e("I", "adopt", "prod"), _e("S1", "set", "blue", "I"), _e("S2", "set", "green", "S1")]
    t = route.rollback_target(j, j[2])
    assert t is not None and t.id == "S1"
    j.append(_e("R1", "rollback", "blue", "S2", restores="S1"))
    t = route.rollback_target(j, j[3])
    assert t is not None and t.id == "I"
    j.append(_e("R2", "rollback", "prod", "R1", restores="I"))
    assert route.rollback_target(j, j[4]) is None  # back at the start
    j.append(_e("S3", "set", "green", "R2"))
    t = route.rollback_target(j, j[5])
    assert t is not None and t.id == "R2" and t.to is not None and t.to.slot == "prod"


def test_the_file_in_effect_names_its_entry_and_a_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    f, jpath = tmp_path / "llm.env", tmp_path / "llm.env.journal"
    a = route.Entry("A", "t0", "adopt", route.Route("http://h:1/v1", "m"))
    route.append(jpath, a)
    route.write(f, a.to, a, command="builder route init")  # type: ignore[arg-type]
    b = route.Entry("B", "t1", "set", route.Route("http://h:2/v1", "m", "green", "rt"), a.to, "A")
    route.append(jpath, b)  # journaled, then killed before the file was replaced
    with open(jpath, "a") as fh:
        fh.write('{"id": "C", "ti')  # a torn line
    j = route.read_journal(jpath)
    assert [e.id for e in j] == ["A", "B"]
    cur = route.current(f, j)
    assert cur.foreign is None and cur.entry is not None and cur.entry.id == "A" and cur.route == a.to
    d = route.Entry("D", "t2", "set", route.Route("http://h:2/v1", "m", "green"), a.to, "A")
    route.append(jpath, d)
    assert [e.id for e in route.read_journal(jpath)] == ["A", "B", "D"]
    f.write_text(f.read_text() + "EXTRA=1\n")
    assert route.current(f, route.read_journal(jpath)).foreign == "it defines other variables (EXTRA)"


# --------------------------------------------------------------------------- units


def _unit_req(**kw: object) -> UnitRequest:
    base: dict[str, object] = dict(
        service="querylake-llm", slot="green", runtime="matrix-a-py312-3f2a9c0d1b7e",
        argv=["/srv/rt/matrix-a-py312-3f2a9c0d1b7e/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--port", "8002"],
        env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1"}, workdir="/srv/serve-state",
        startup_timeout=900, stop_timeout=60, command="builder serve unit")
    base.update(kw)
    return UnitRequest(**base)  # type: ignore[arg-type]


def test_systemd_words_are_quoted_and_never_expanded() -> None:
    assert systemd_quote("/srv/rt/bin/vllm") == "/srv/rt/bin/vllm"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote("50%") == "50%%"
    assert systemd_quote("$HOME") == '"$$HOME"'
    assert systemd_quote('say "hi"') == '"say \\"hi\\""'


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    vllm = tmp_path / "rt" / "bin" / "vllm"
    vllm.parent.mkdir(parents=True)
    vllm.write_text("#!/bin/sh\n")
    vllm.chmod(0o755)
    (tmp_path / "state").mkdir()
    key = tmp_path / "key.env"
    key.write_text("QL_KEY=x\n")
    text = render_systemd(_unit_req(argv=[str(vllm), "serve", "m"], workdir=str(tmp_path / "state"),
                                    api_key_env="QL_KEY", api_key_file=str(key)))
    unit = tmp_path / "querylake-llm-green.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    problems = [x for x in r.stderr.splitlines() if "querylake-llm-green.service" in x]
    assert not problems, r.stderr


def test_sh_unit_exports_the_key_under_vllms_name_and_execs_the_runtime() -> None:
    text = render_sh(_unit_req(api_key_env="QL_KEY", env={"CUDA_VISIBLE_DEVICES": "1"}))
    assert 'export VLLM_API_KEY="${QL_KEY:?QL_KEY is not set}"' in text
    assert text.splitlines()[-1].startswith("exec /srv/rt/matrix-a-py312-3f2a9c0d1b7e/bin/vllm serve ")
    r = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- probe parsing

# vLLM 0.13.0's /metrics, abridged (prometheus_client text format, labels model_name + engine).
METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="querylake-llm"} 3.0
vllm:num_requests_running{engine="1",model_name="querylake-llm"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="querylake-llm"} 2.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="querylake-llm"} 17.0
"""


def test_metrics_sum_over_engines() -> None:
    m = probe.parse_metrics(METRICS)
    assert (m[probe.RUNNING], m[probe.WAITING], m["vllm:request_success_total"]) == (4.0, 2.0, 17.0)


@pytest.mark.parametrize(("body", "problem"), [
    ({"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "ok"}}],
      "usage": {"completion_tokens": 1}}, None),
    ({"object": "chat.completion", "choices": [], "usage": {"completion_tokens": 1}}, "no choices"),
    ({"object": "text_completion", "choices": []}, "object is 'text_completion'"),
    ({"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": ""}}],
      "usage": {"completion_tokens": 0}}, "nothing was generated"),
])
def test_completion_shape(body: dict[str, object], problem: str | None) -> None:
    got = probe.check_completion(body, "m")
    assert (got is None) if problem is None else (got is not None and problem in got)


@pytest.mark.parametrize(("body", "text"), [
    (b'{"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "param": null, '
     b'"code": 404}}', "HTTP 404: The model `x` does not exist."),
    (b'{"object": "error", "message": "old shape", "type": "BadRequestError", "code": 400}', "HTTP 404: old shape"),
    (b'{"error": "Unauthorized"}', "HTTP 404: Unauthorized"),
    (b'{"detail": "EngineCore died"}', "HTTP 404: EngineCore died"),
    (b"<html>bad gateway</html>", "HTTP 404: <html>bad gateway</html>"),
])
def test_error_bodies_of_either_vllm_shape(body: bytes, text: str) -> None:
    assert probe.error_text(probe.Response(404, body)) == text


def test_urls_with_or_without_v1() -> None:
    assert endpoint.split_url("http://127.0.0.1:8002/v1") == ("http", "127.0.0.1", 8002, "")
    assert endpoint.split_url("http://127.0.0.1:8002/") == ("http", "127.0.0.1", 8002, "")
    assert endpoint.split_url("10.0.0.5:9000/llm/v1/") == ("http", "10.0.0.5", 9000, "/llm")
    assert endpoint.api_url("https://llm.example.org") == "https://llm.example.org:443/v1"
    assert endpoint.api_url("http://[::1]:8000") == "http://[::1]:8000/v1"
    with pytest.raises(ValueError, match="only http:// and https://"):
        endpoint.split_url("ftp://example.org/v1")


@pytest.mark.parametrize(("url", "why"), [
    ("http://h:1/v1\nX=1", "contains a line break ('\\n')"),
    ("http://h:1/v1\u2028X=1", "contains a line break ('\\u2028')"),
    ("http://h:1/v1\x85", "contains a line break ('\\x85')"),
    ("http://h:1/v\x00", "contains a control character ('\\x00')"),
    ("http://h:1/v1 x", "contains ' '"),
    ("http://h:1/`id`", "contains '`'"),
    ("http://h:1/v1#frag", "contains '#'"),
    ("http://u@h:1/v1", "carries credentials"),
    ("http://h:99999/v1", "port is not a TCP port"),
    ("http://h_x:1/v1", "host is not a hostname or an IP address"),
    ("http://:1/v1", "has no host"),
    ("", "empty"),
])
def test_urls_that_would_not_stay_one_safe_line_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError) as exc:
        endpoint.split_url(url)
    assert why in str(exc.value)


@pytest.mark.parametrize(("name", "ok"), [
    ("querylake-llm", True), ("Qwen/Qwen2.5-7B-Instruct", True), ("/models/llama-3.1", True),
    ("org/name:tag", True), ("m" * 256, True), ("m" * 257, False), ("", False), ("-x", False),
    ("a b", False), ("a\nb", False), ("a\u2028b", False), ("a$b", False), ('a"b', False), ("a'b", False),
    ("a\\b", False), ("a#b", False), ("a;b", False),
])
def test_model_names_are_an_allow_list(name: str, ok: bool) -> None:
    assert (endpoint.check_model(name) is None) is ok


def test_route_problems_name_each_field() -> None:
    assert endpoint.route_problems(url="http://127.0.0.1:8000/v1", model="m", slot="green",
                                   runtime="matrix-a-py312-3f2a9c0d1b7e", lock="ab" * 32) == []
    got = endpoint.route_problems(url="http://127.0.0.1:8000", model="m\n", slot="Green", runtime="a b",
                                  lock="x\ny")
    assert [p.split(":")[0] for p in got] == ["url", "model", "slot", "runtime", "lock"]
    assert "not in builder's form" in got[0]


def _captured(name: str) -> str:
    """A real nvidia-smi output (tests/data/host), its ``#!`` header stripped."""
    text = (ROOT / "tests" / "data" / "host" / "nvidia-smi" / name).read_text()
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#! "))


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``nvidia-smi`` on PATH printing ``tmp/out.txt`` (what builder parses, from a real capture)."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    return tmp_path / "out.txt"


def test_gpu_memory_of_a_real_h200(fake_smi: Path) -> None:
    fake_smi.write_text(_captured("query-gpu-memory-h200.txt"))
    gpus = gpu.gpu_memory()
    assert gpus == [gpu.GpuMemory("0", "GPU-1405541f-6c5e-9b7f-eb4b-092852eafd9b", "NVIDIA H200", 143771, 143156)]
    svc = service_from_mapping({**BASE, "vllm": {"gpu-memory-utilization": 0.85}, "env": {}})
    assert gpu.check_gpu_memory(svc, svc.slot("green"), gpus) == "GPU 0: 143156 of 143771 MiB free"


def test_gpu_memory_na_is_not_checked_and_an_nvml_error_is_one_line(fake_smi: Path) -> None:
    # GB10 (unified memory) answers [N/A] for memory fields (llama-swap#782).
    fake_smi.write_text("0, GPU-x, NVIDIA GB10, [N/A], [N/A]\n")
    gpus = gpu.gpu_memory()
    assert gpus is not None and gpus[0].total_mib is None
    svc = service_from_mapping({**BASE, "env": {"CUDA_VISIBLE_DEVICES": "0"}, "vllm": {}})
    assert "free memory not checked" in gpu.check_gpu_memory(svc, svc.slot("green"), gpus)
    fake_smi.write_text(_captured("mismatch-two-line-550.txt"))
    with pytest.raises(Unavailable, match="cannot read GPU memory"):
        gpu.gpu_memory()


def test_user_and_allow_root_are_validated() -> None:
    svc = service_from_mapping({**BASE, "user": "querylake", "allow-root": True})
    assert (svc.user, svc.allow_root) == ("querylake", True)
    assert (service_from_mapping(BASE).user, service_from_mapping(BASE).allow_root) == (None, False)
    with pytest.raises(SpecError) as ei:
        service_from_mapping({**BASE, "user": "Query Lake\nx", "allow-root": "yes"}, "s.toml")
    assert ei.value.problems == ["s.toml: user: contains a control character or line break: 'Query Lake\\nx'"]
    with pytest.raises(SpecError) as ei:
        service_from_mapping({**BASE, "user": "Query Lake", "allow-root": "yes"}, "s.toml")
    assert [p.split(": ")[1] for p in ei.value.problems] == ["user", "allow-root"]


def test_the_unit_carries_what_decides_the_model_and_caches_never_secrets() -> None:
    from builder.serve.environment import carried

    got = carried({"HOME": "/h", "HF_HOME": "/hf", "HF_HUB_OFFLINE": "1", "HF_TOKEN": "s", "VLLM_API_KEY": "k",
                   "HUGGING_FACE_HUB_TOKEN": "s", "CUDA_VISIBLE_DEVICES": "1", "TERM": "xterm", "SSH_AUTH_SOCK": "/s",
                   "BUILDER_SERVE_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "s", "VLLM_LOGGING_LEVEL": "INFO"})
    assert got == {"HOME": "/h", "HF_HOME": "/hf", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "1",
                   "VLLM_LOGGING_LEVEL": "INFO"}
