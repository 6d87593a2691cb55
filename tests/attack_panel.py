"""An attack on a running panel over real HTTP: open redirects, the login throttle, oversized input.

    python tests/attack_panel.py http://127.0.0.1:5000 --admin EMAIL --viewer EMAIL --victim EMAIL \
        --password PASSWORD

The accounts must exist with that password (the victim gets locked for 5 minutes), and the
panel must run with FLEET_TRUSTED_PROXIES=1, as behind a load balancer: each simulated client
has an address of its own in X-Forwarded-For. Prints a line a case; exit 0 when every case held.
Only ever aim it at a panel of your own on this machine.
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
from urllib.parse import quote

import requests

TIMEOUT = 30
failures: list[str] = []


def case(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


class Client:
    """A browser: its own cookies, and (behind a trusted proxy) its own address."""

    def __init__(self, base: str, address: str | None = None):
        self.base = base
        self.http = requests.Session()
        if address:
            self.http.headers["X-Forwarded-For"] = address

    def token(self, path: str = "/admin/login") -> str:
        page = self.http.get(self.base + path, timeout=TIMEOUT).text
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)

    def login(self, email: str, password: str, next_: str | None = None, token: str | None = None):
        url = self.base + "/admin/login" + (f"?next={next_}" if next_ is not None else "")
        return self.http.post(url, data={"email": email, "password": password, "csrf_token": token or self.token()},
                              allow_redirects=False, timeout=TIMEOUT)


def redirects(base: str, email: str, password: str) -> None:
    for n, target in enumerate(["/%09/evil.example/x", "//evil.example/x", "/%5Cevil.example", "%2F%2Fevil.example",
                                "https://evil.example/", "/%0d%0aSet-Cookie:%20x=1", "javascript:alert(1)",
                                "/%2F%2Fevil.example", "/\t/evil.example", "/admin/%0d%0aLocation:%20//evil"]):
        client = Client(base, f"10.1.0.{n + 1}")
        response = client.login(email, password, next_=target)
        location = response.headers.get("Location", "")
        case(response.status_code == 302 and location == "/admin/",
             f"next={target!r} -> {response.status_code} Location {location!r}")
    client = Client(base, "10.1.0.99")
    kept = "/admin/jobs/?flt0_status_equals=failed"
    response = client.login(email, password, next_=quote(kept, safe=""))
    case(response.headers.get("Location") == kept, f"a path of the panel is followed: {response.headers.get('Location')!r}")


def parallel_guesses(base: str, victim: str, n: int = 30) -> None:
    """n wrong passwords at once for one account: exactly the allowed number get an answer."""
    clients = [Client(base, f"10.2.{i // 250}.{i % 250 + 1}") for i in range(n)]
    tokens = [c.token() for c in clients]
    barrier = threading.Barrier(n)
    codes: list[int] = [0] * n

    def guess(i: int) -> None:
        barrier.wait()
        codes[i] = clients[i].login(victim, f"wrong-guess-{i}", token=tokens[i]).status_code

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    case(codes.count(401) == 5 and codes.count(429) == n - 5,
         f"{n} parallel wrong passwords for one account: {codes.count(401)} checked (401), {codes.count(429)} refused (429)")


def success_does_not_reset(base: str, admin: str, viewer: str, password: str) -> None:
    """A viewer's good login from the same address leaves the admin's failed guesses counted."""
    client = Client(base, "10.3.0.1")
    codes = []
    for i in range(8):
        codes.append(client.login(admin, f"guess-{i}").status_code)
        Client(base, "10.3.0.1").login(viewer, password)
    case(codes == [401] * 5 + [429] * 3, f"admin guesses between a viewer's good logins: {codes}")


def address_limit(base: str) -> None:
    """Guesses over many accounts from one address stop at the address limit."""
    address = "10.4.0.1"
    codes = [Client(base, address).login(f"nobody{i}@example.com", "wrong-password").status_code for i in range(22)]
    case(codes[:20] == [401] * 20 and codes[20:] == [429, 429], f"22 unknown accounts from one address: {codes}")


def other_clients_still_log_in(base: str, email: str, password: str) -> None:
    response = Client(base, "10.5.0.1").login(email, password)
    case(response.status_code == 302, f"another client behind the proxy still logs in: {response.status_code}")


OVERSIZED = [
    "/admin/jobs/?page=99999999999999999999",
    "/admin/failed-plans/?page=99999999999999999999",
    f"/admin/failed-plans/?flt0_plan_equals={10**23}",
    f"/admin/failed-plans/?flt0_user_equals={10**23}",
    f"/admin/jobs/details/?id={10**23}",
    f"/admin/failed-plans/details/?id={10**23}",
    "/admin/jobs/?" + "&".join(f"flt{i}_status_equals=failed" for i in range(300)),
    "/admin/failed-plans/?" + "&".join(f"flt{i}_error_code_equals=ERR_AUTH" for i in range(300)),
    "/admin/jobs/?search=" + "+".join("x" * 50 for _ in range(300)),
    "/admin/dead-letters/?actor=" + "x" * 5000,
    "/admin/dead-letters/" + "x" * 3000 + "/",
    "/api/bulk/" + "x" * 3000,
]


def oversized(base: str, admin: str, password: str) -> None:
    client = Client(base, "10.7.0.1")
    case(client.login(admin, password).status_code == 302, "admin logs in for the oversized cases")
    for path in OVERSIZED:
        response = client.http.get(base + path, timeout=TIMEOUT)
        case(response.status_code < 500 and "Traceback" not in response.text,
             f"GET {path[:70]}{'…' if len(path) > 70 else ''} -> {response.status_code}")
    token = client.token("/admin/failed-plans/")
    for path, data in [("/admin/failed-plans/action/", {"action": "retry", "rowid": str(10**23)}),
                       (f"/admin/failed-plans/retry-matching/?flt0_plan_equals={10**23}", {}),
                       ("/admin/jobs/retry/", {"id": str(10**23)})]:
        response = client.http.post(base + path, data={**data, "csrf_token": token}, timeout=TIMEOUT)
        case(response.status_code < 500, f"POST {path[:70]} -> {response.status_code}")
    response = client.http.post(base + "/admin/login", data={"email": "x" * (2 << 20)}, timeout=TIMEOUT)
    case(response.status_code == 413, f"a 2 MB login form -> {response.status_code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--admin", required=True)
    parser.add_argument("--viewer", required=True)
    parser.add_argument("--victim", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    base = args.base.rstrip("/")
    redirects(base, args.admin, args.password)
    oversized(base, args.admin, args.password)
    parallel_guesses(base, args.victim)
    success_does_not_reset(base, args.admin, args.viewer, args.password)
    address_limit(base)
    other_clients_still_log_in(base, args.viewer, args.password)
    print(f"{len(failures)} case(s) failed" if failures else "every case held")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
