//! The relay's hot path: one inbound message encoded once and fanned out to
//! 100 recipients' outboxes, which are then drained as the writers would.
//!
//! Run with `cargo bench -p relais-bench --bench fanout`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relais_server::budget::MemoryBudget;
use relais_server::outbox::{Batch, Outbox};
use relais_server::relay::Seat;
use relais_server::Relay;

const RECIPIENTS: usize = 100;
const PAYLOAD: [u8; 64] = [7; 64];

fn bench_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");

    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_message_64B", |b| {
        b.iter(|| relais_protocol::encode_message(black_box("player-042"), black_box(&PAYLOAD)))
    });

    // 100 members in one room, echo on, each with its own outbox.
    let budget = Arc::new(MemoryBudget::new(usize::MAX));
    let relay = Relay::with_budget(budget.clone());
    let outboxes: Vec<Arc<Outbox>> = (0..RECIPIENTS)
        .map(|_| Arc::new(Outbox::new(8 * 1024 * 1024, budget.clone())))
        .collect();
    let members: Vec<_> = outboxes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            relay
                .join(
                    "bench",
                    &format!("player-{i:03}"),
                    Seat {
                        echo: true,
                        ..Seat::default()
                    },
                    o.clone(),
                )
                .expect("join")
        })
        .collect();
    let mut drained = Batch::default();
    // Drop the WELCOME/JOINED events the joins queued.
    for o in &outboxes {
        o.drain(&mut drained);
        o.written();
    }
    drained.clear();

    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function("publish_to_100_and_drain", |b| {
        b.iter(|| {
            // encode_message + one push per recipient, under the room lock.
            relay
                .publish(&members[0], black_box(&PAYLOAD))
                .expect("no budget");
            for o in &outboxes {
                o.drain(&mut drained);
                o.written();
            }
            black_box(drained.frames.len());
            drained.clear();
        })
    });

    // The same without the relay: one encoded frame pushed to 100 outboxes.
    group.bench_function("encode_and_push_100_outboxes", |b| {
        b.iter(|| {
            let frame = relais_protocol::encode_message("player-000", black_box(&PAYLOAD));
            for o in &outboxes {
                o.push_message(0, frame.clone());
            }
            for o in &outboxes {
                o.drain(&mut drained);
                o.written();
            }
            black_box(drained.frames.len());
            drained.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
