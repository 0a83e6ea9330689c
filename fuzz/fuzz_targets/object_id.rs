#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    objects_fuzz::storage::object_id(objects_fuzz::storage::Harness::shared(), data);
});
