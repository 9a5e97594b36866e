//! Keyed concurrency: apply a stream of account events, in order per account, with many
//! accounts at once.
//!
//! ```text
//! cargo run --release --example accounts                     # 20,000 events, 500 accounts
//! cargo run --release --example accounts -- --events 100000 --accounts 50
//! ```
//!
//! Deposits and withdrawals arrive from a generator, interleaved across accounts (a few
//! accounts are much busier than the others). Each event is applied by a simulated
//! remote ledger: read the balance, wait (the network), write the new balance. Two
//! events of one account running at once would lose an update (both read the same
//! balance); a withdrawal applied before the deposit it relies on would be refused.
//! `map_concurrent_by_key` runs one event per account at a time, in input order, and
//! up to 32 accounts at once. At the end every balance is checked against a sequential
//! replay of the same events, and the refusals against the replay's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgate::prelude::*;
use futures::StreamExt;

const LIMIT: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Event {
    account: u32,
    /// Positive: a deposit; negative: a withdrawal.
    amount: i64,
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Done { account: u32, balance: i64 },
    Refused { account: u32, amount: i64 },
}

/// A simulated remote ledger: balances behind a read, a wait and a write.
#[derive(Clone, Default)]
struct Ledger {
    balances: Arc<Mutex<HashMap<u32, i64>>>,
}

impl Ledger {
    async fn apply(&self, event: Event) -> Applied {
        let balance = *self
            .balances
            .lock()
            .unwrap()
            .get(&event.account)
            .unwrap_or(&0);
        // The network: 1 to 4 ms. Another event of the same account applied now would
        // read the same balance and one of the two updates would be lost.
        let wait = 1 + u64::from(event.account.wrapping_mul(2_654_435_761) >> 30) % 4;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let new = balance + event.amount;
        if new < 0 {
            return Applied::Refused {
                account: event.account,
                amount: event.amount,
            };
        }
        self.balances.lock().unwrap().insert(event.account, new);
        Applied::Done {
            account: event.account,
            balance: new,
        }
    }
}

/// `count` events over `accounts` accounts; one account in ten gets half the events.
fn events(count: u64, accounts: u32) -> impl futures::Stream<Item = Event> {
    stream! {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..count {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let busy = state % 2 == 0;
            let account = if busy {
                (state >> 8) as u32 % (accounts / 10).max(1)
            } else {
                (state >> 8) as u32 % accounts
            };
            // Mostly deposits; a withdrawal may exceed the balance and be refused.
            let amount = if (state >> 40) % 3 == 0 {
                -(((state >> 20) % 150) as i64)
            } else {
                ((state >> 20) % 100) as i64 + 1
            };
            yield Event { account, amount };
        }
    }
}

fn parse_args() -> (u64, u32) {
    let (mut count, mut accounts) = (20_000u64, 500u32);
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let value = argv.next().unwrap_or_default();
        let number = value.replace('_', "").parse::<u64>();
        match (arg.as_str(), number) {
            ("--events", Ok(n)) => count = n,
            ("--accounts", Ok(n)) if n > 0 && n <= u64::from(u32::MAX) => accounts = n as u32,
            _ => {
                eprintln!("usage: accounts [--events N] [--accounts N (> 0)]");
                std::process::exit(2)
            }
        }
    }
    (count, accounts)
}

#[tokio::main]
async fn main() {
    let (count, accounts) = parse_args();
    let ledger = Ledger::default();
    let started = Instant::now();

    let applier = ledger.clone();
    let applied = events(count, accounts).map_concurrent_by_key(
        LIMIT,
        |event| event.account,
        move |event| {
            let ledger = applier.clone();
            async move { ledger.apply(event).await }
        },
    );
    let mut applied = std::pin::pin!(applied);
    let mut refused = 0u64;
    let mut results = 0u64;
    while let Some(result) = applied.next().await {
        results += 1;
        if let Applied::Refused { .. } = result {
            refused += 1;
        }
    }
    let elapsed = started.elapsed();

    // The same events, one at a time: the balances and refusals they must give.
    let mut expected: HashMap<u32, i64> = HashMap::new();
    let mut expected_refused = 0u64;
    let mut replay = std::pin::pin!(events(count, accounts));
    while let Some(event) = replay.next().await {
        let balance = expected.entry(event.account).or_insert(0);
        if *balance + event.amount < 0 {
            expected_refused += 1;
        } else {
            *balance += event.amount;
        }
    }

    let balances = ledger.balances.lock().unwrap().clone();
    let wrong: Vec<u32> = expected
        .iter()
        .filter(|(account, balance)| balances.get(account).copied().unwrap_or(0) != **balance)
        .map(|(account, _)| *account)
        .collect();
    println!(
        "{results} events over {} accounts applied in {:.2} s ({:.0} events/s, {LIMIT} accounts at once)",
        expected.len(),
        elapsed.as_secs_f64(),
        results as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!("{refused} withdrawals refused (a sequential replay refuses {expected_refused})");
    if results != count || !wrong.is_empty() || refused != expected_refused {
        eprintln!(
            "accounts: {} balances differ from the sequential replay (first: {:?})",
            wrong.len(),
            wrong.first()
        );
        std::process::exit(1);
    }
    println!("every balance equals the sequential replay's");
}
