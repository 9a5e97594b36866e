//! Bad arguments fail loudly at construction, naming the argument; building a pipeline
//! needs no runtime, and polling it outside one panics with a message that says so.

use std::panic::AssertUnwindSafe;

use futures::StreamExt;

use crate::support::*;

/// The message of the panic `f` raises.
fn panic_of(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(AssertUnwindSafe(f)).expect_err("it did not panic");
    panic_message(&*payload)
}

#[test]
fn a_zero_limit_panics_at_construction_naming_limit() {
    for op in Op::ALL {
        let probe = Probe::new();
        let message = panic_of(|| {
            let _ = build(op, 0, None, source(oks(3), &probe), Work::new(&probe));
        });
        assert!(message.contains("`limit`"), "{}: {message}", op.name());
        assert!(
            message.contains(&format!("`{}`", op.name())),
            "{}: {message}",
            op.name()
        );
        assert_eq!(probe.pulled(), 0);
    }
}

#[test]
fn a_window_below_the_limit_panics_naming_window() {
    for op in Op::ALL.into_iter().filter(|op| op.is_ordered()) {
        for (limit, window) in [(4, 3), (1, 0), (16, 15)] {
            let probe = Probe::new();
            let message = panic_of(|| {
                let _ = build(
                    op,
                    limit,
                    Some(window),
                    source(oks(3), &probe),
                    Work::new(&probe),
                );
            });
            assert!(
                message.contains("`window`"),
                "{} with_window({window}) on limit {limit}: {message}",
                op.name()
            );
        }
        let probe = Probe::new();
        let _accepted = build(op, 4, Some(4), source(oks(3), &probe), Work::new(&probe));
    }
}

#[test]
fn polling_outside_a_tokio_runtime_panics_saying_so() {
    for op in Op::ALL {
        let probe = Probe::new();
        let mut flow = build(op, 3, None, source(oks(5), &probe), Work::new(&probe));
        let message = panic_of(|| {
            futures::executor::block_on(flow.next());
        });
        assert!(
            message.contains("tokio runtime"),
            "{}: {message}",
            op.name()
        );
        assert_eq!(probe.pulled(), 0, "{}: pulled outside a runtime", op.name());
    }
}

#[test]
fn a_pipeline_built_outside_a_runtime_runs_in_one() {
    for op in Op::ALL {
        for flavor in Flavor::all() {
            let probe = Probe::new();
            let mut flow = build(op, 3, None, source(oks(50), &probe), Work::new(&probe));
            let runtime = flavor.runtime();
            let out = in_context(format_args!("{} on {flavor}", op.name()), || {
                runtime.block_on(drain(&mut flow, &probe))
            });
            assert_eq!(
                sorted(out),
                sequential(&oks(50)),
                "{} on {flavor}",
                op.name()
            );
        }
    }
}

#[tokio::test]
async fn huge_limits_and_windows_work() {
    for op in Op::ALL {
        for (limit, window) in [
            (usize::MAX, None),
            (1, Some(usize::MAX)),
            (3, Some(1 << 40)),
        ] {
            if window.is_some() && !op.is_ordered() {
                continue;
            }
            let probe = Probe::new();
            let mut flow = build(
                op,
                limit,
                window,
                source(oks(100), &probe),
                Work::new(&probe),
            );
            let out = drain(&mut flow, &probe).await;
            assert_eq!(
                sorted(out),
                sequential(&oks(100)),
                "{} limit {limit} window {window:?}",
                op.name()
            );
        }
    }
}
