#!/usr/bin/env python3
"""Runs a wasm32-wasip1 program (a cargo test binary) under Wasmtime, like a native executable.

Cargo calls it as the target's runner (CARGO_TARGET_WASM32_WASIP1_RUNNER, set by `make unit-wasm`):

    wasi_run.py path/to/test.wasm [args...]

so that `cargo test --target wasm32-wasip1` runs the filter core's tests with a 32-bit `usize`.
The runtime is the `wasmtime` package pinned in tests/requirements.txt (Python bindings that
carry the Wasmtime library), so nothing outside the project's virtualenv is needed.

- argv: the module path, then the arguments as given (libtest's filters, --nocapture, ...).
- environment and stdin/stdout/stderr: this process's own. No directory is opened to the guest.
- the proxy-wasm host functions (module "env") that the library links are defined to trap: the
  tests drive the sans-io core, never the Envoy adapter, so none of them is ever called.
- exit status: the guest's own (`proc_exit`: 0 when all tests pass, 101 when one fails). A trap
  (a panic aborts: wasm32-wasip1 has no unwinding, so a failing assertion ends in `unreachable`)
  exits with 134, as an abort would natively, after printing the trap and its wasm backtrace.
  The abort also loses the panic message that libtest had captured, so the module is then run
  once more with --nocapture, where the message is printed under the name of the test.
"""

import os
import sys

import wasmtime

ABORT_STATUS = 134


def run(argv):
    if not argv:
        print("usage: wasi_run.py MODULE.wasm [ARGS...]", file=sys.stderr)
        return 2
    path, args = argv[0], argv[1:]

    config = wasmtime.Config()
    config.cache = True  # compiled code is kept in Wasmtime's cache dir, keyed by module content
    engine = wasmtime.Engine(config)
    module = wasmtime.Module.from_file(engine, path)

    status = start(engine, module, path, args)
    if status == ABORT_STATUS and not CAPTURE_OFF.intersection(args):
        # libtest had captured the panic message of the test that aborted, and the abort lost it.
        # The same run again without capture prints it, right under that test's name.
        print(
            f"wasi_run.py: {os.path.basename(path)} aborted; running it again with --nocapture "
            "to show the panic message",
            file=sys.stderr,
        )
        start(engine, module, path, [*args, "--nocapture"], brief=True)
    return status


# Arguments after which libtest prints as the tests go (or runs none), so a rerun adds nothing.
CAPTURE_OFF = {"--nocapture", "--no-capture", "--list", "--help", "-h"}


def start(engine, module, path, args, brief=False):
    """Runs the module's `_start` in a fresh instance; returns the exit status. `brief`: the
    trap's cause only (its backtrace was printed by the run before)."""
    wasi = wasmtime.WasiConfig()
    wasi.argv = [path, *args]
    wasi.inherit_env()
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()

    store = wasmtime.Store(engine)
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.define_unknown_imports_as_traps(module)

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        instance = linker.instantiate(store, module)
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as exit_trap:
        return exit_trap.code
    except (wasmtime.Trap, wasmtime.WasmtimeError) as trap:
        message = str(trap).strip().splitlines()[-1].strip() if brief else trap
        print(f"wasi_run.py: {os.path.basename(path)} trapped: {message}", file=sys.stderr)
        sys.stderr.flush()
        return ABORT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
