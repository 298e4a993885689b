"""Whether the Hugging Face hub answers, asked once before --download lets anything reach for it: without a
network huggingface_hub retries for about a minute and then blames the cache. Stdlib only, so the CLI can ask
before anything imports huggingface_hub."""
import os
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 4.0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def unreachable_reason(url: str | None = None, timeout: float = TIMEOUT_S) -> str | None:
    """None when the hub answers at all (any HTTP status, proxies honoured); else why not, in a few words."""
    request = urllib.request.Request(url or endpoint(), method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return " ".join(str(reason).split()) or type(err).__name__
    return None
