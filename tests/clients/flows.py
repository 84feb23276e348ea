"""What every flows script in tests/clients/ shares: its output protocol.

`say` prints one line at once (tests/clients.rs reads them as they come);
`expect` checks a value and says `ok <what>`, or raises.
"""


def say(*words):
    print(*words, flush=True)


def expect(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    say("ok", what)
