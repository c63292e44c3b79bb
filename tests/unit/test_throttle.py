from __future__ import annotations

from crmflow.web.ui.throttle import LoginThrottle


def test_window_slides_and_success_clears_the_address():
    now = [0.0]
    t = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    keys = ("email:a@x.example", "ip:1.2.3.4")
    for _ in range(3):
        assert t.retry_after_s(keys) is None
        t.failed(keys)
        now[0] += 1
    assert t.retry_after_s(keys) == 57  # the first failure (t=0) leaves at t=60
    assert t.retry_after_s(("email:b@x.example",)) is None
    now[0] = 60.5
    assert t.retry_after_s(keys) is None
    t.failed(keys)
    t.succeeded(keys[:1])
    assert t.retry_after_s(keys[:1]) is None
