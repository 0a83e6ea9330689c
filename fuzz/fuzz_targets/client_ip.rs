#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    objects_fuzz::chat::client_ip(data);
});
