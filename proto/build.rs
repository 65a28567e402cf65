//! Compiles `proto/meshcast.proto` with protox (pure Rust), so no system
//! `protoc` is needed on any machine that builds meshcast.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/meshcast.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
