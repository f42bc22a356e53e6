import pytest

from refresher.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("2h0m0s", 7200), ("2h", 7200), ("10m", 600), ("1m30s", 90), ("1.5h", 5400),
    ("500ms", 0.5), ("0", 0), ("20s", 20), ("1h1m1s", 3661), ("100us", 1e-4),
    ("1µs", 1e-6), (".5s", 0.5), ("-1s", -1), ("+3s", 3), ("1h0.5m", 3630),
])
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "h", "1h 2m", "abc", "1.2.3s", "s10"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (7200, "2h0m0s"), (3600, "1h0m0s"), (20, "20s"), (90, "1m30s"), (0.5, "500ms"), (0, "0s"),
    (1.5, "1.5s"), (86400, "24h0m0s"),
])
def test_format_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
