#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    objects_fuzz::storage::storage_ops(objects_fuzz::storage::Harness::shared(), data);
});
