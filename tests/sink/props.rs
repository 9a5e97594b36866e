//! Property: whatever the items, buffer size and writer, the output is every item's line.

use flowgate::sink;
use futures::StreamExt;
use proptest::prelude::*;

use crate::writers::Recorder;

proptest! {
    #[test]
    fn the_output_is_every_items_line_in_order(
        items in prop::collection::vec(any::<String>(), 0..40),
        buffer in 1..64usize,
        per_call in 1..16usize,
        pending_every in prop::option::of(2..5usize),
    ) {
        let mut writer = Recorder::new().per_call(per_call);
        if let Some(k) = pending_every {
            writer = writer.pending_every(k);
        }
        let mut out = sink::lines(writer).buffer(buffer);
        futures::executor::block_on(
            futures::stream::iter(items.clone()).map(Ok).forward(&mut out),
        )
        .unwrap();

        let expected: Vec<u8> = items.iter().flat_map(|item| format!("{item}\n").into_bytes()).collect();
        prop_assert_eq!(&out.get_ref().out, &expected);
        prop_assert_eq!(out.written(), items.len() as u64);
        let longest = items.iter().map(|item| item.len() + 1).max().unwrap_or(0);
        prop_assert!(out.get_ref().max_offered() <= buffer - 1 + longest);
        prop_assert!(out.get_ref().offered.iter().all(|&offered| offered > 0));
    }
}
