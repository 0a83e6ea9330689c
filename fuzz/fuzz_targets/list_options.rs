#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    objects_fuzz::storage::list_options(objects_fuzz::storage::Harness::shared(), data);
});
