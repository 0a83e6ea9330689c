#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    objects::testing::cluster_frames(data);
});
