"""Start CodeRAG services as real ``kserve.ModelServer`` processes on 127.0.0.1 for tests.

KServe keeps one module-level FastAPI app per process, so each service runs in its own subprocess
(``python -m serving SERVICE``) and is stopped with SIGTERM (SIGKILL only if it hangs).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    service: str
    model_name: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_service(
    service: str,
    flags: list[str],
    log_dir: Path,
    *,
    model_name: str,
    env: dict | None = None,
    wait_ready: bool = True,
    timeout_s: float = 180.0,
) -> ServiceProcess:
    """Launch ``python -m serving SERVICE`` on a free port; wait until the model answers ready (or up)."""
    port = free_port()
    log_path = log_dir / f"{service}-{port}.log"
    command = [
        sys.executable,
        "-m",
        "serving",
        service,
        "--http_port",
        str(port),
        "--grpc_port",
        str(free_port()),
        "--enable_grpc",
        "false",
        "--model_name",
        model_name,
        *flags,
    ]
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT)
    handle = ServiceProcess(service, model_name, port, process, log_path)
    deadline = time.monotonic() + timeout_s
    ready_codes = {200} if wait_ready else {200, 503}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{service} exited with {process.returncode}:\n{handle.log_tail()}")
        try:
            status = httpx.get(f"{handle.url}/v1/models/{model_name}", timeout=2).status_code
            if status in ready_codes:
                return handle
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    handle.stop()
    raise RuntimeError(f"{service} did not become ready in {timeout_s:.0f}s:\n{handle.log_tail()}")


def scrape_metrics(url: str) -> dict[str, float]:
    """``/metrics`` as {"name{labels}": value} using prometheus-client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def metric_value(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for key, value in samples.items():
        sample_name, _, rest = key.partition("{")
        if sample_name != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total, found = total + value, True
    if not found:
        raise KeyError(f"no sample {name} with {labels}")
    return total


def _choice(index: int, reply) -> dict:
    text, logprob = reply if isinstance(reply, tuple) else (reply, None)
    logprobs = None if logprob is None else {"content": [{"token": "x", "logprob": logprob, "bytes": None,
                                                          "top_logprobs": []}]}
    return {"index": index, "finish_reason": "stop", "logprobs": logprobs,
            "message": {"role": "assistant", "content": text}}


class ScriptedChatServer:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint on 127.0.0.1 that answers scripted replies.

    It stands in for vLLM where a test needs a given reply (broken SQL, DROP, prose), in the exact
    wire format the ``openai`` client parses; every request it received is kept in ``requests``.
    ``replies`` is a list (answered in order) or a dict from a marker to a reply: the first marker found
    in the last user message picks the reply, so concurrent requests get their own. The reply
    :attr:`HANG` accepts the request and never answers (until :meth:`close`). A request with ``n`` > 1
    gets the next ``n`` replies (list) or the picked reply ``n`` times (dict) as its choices; a reply
    given as ``(text, logprob)`` comes with that token log-probability.
    """

    HANG = object()

    def __init__(self, replies: list[str] | dict[str, object]):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.keyed = dict(replies) if isinstance(replies, dict) else None
        self.replies, self.requests = ([] if self.keyed is not None else list(replies)), []
        self._closed = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _pick(self, body):
                if outer.keyed is None:
                    return outer.replies.pop(0) if outer.replies else None
                last = next((m["content"] for m in reversed(body.get("messages", [])) if m["role"] == "user"), "")
                every = " ".join(m["content"] for m in body.get("messages", []) if m["role"] == "user")
                for marker, reply in outer.keyed.items():
                    if marker in last:
                        return reply
                for marker in outer.keyed:  # a repair turn: the question is in the first message
                    if f"{marker} (repair)" in outer.keyed and marker in every:
                        return outer.keyed[f"{marker} (repair)"]
                return None

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append(body)
                n = body.get("n") or 1
                contents = [self._pick(body) if self.path.rstrip("/") == "/v1/chat/completions" else None
                            for _ in range(n if outer.keyed is None else 1)] * (1 if outer.keyed is None else n)
                content = contents[0]
                if content is ScriptedChatServer.HANG:
                    outer._closed.wait()
                    return
                if content is None or None in contents:
                    self.send_response(404 if self.path.rstrip("/") != "/v1/chat/completions" else 500)
                    self.end_headers()
                    return
                answer = json.dumps({
                    "id": f"chatcmpl-{len(outer.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "scripted"),
                    "choices": [_choice(i, c) for i, c in enumerate(contents)],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
