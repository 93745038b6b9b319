// `sqlx::migrate!` embeds the migrations at compile time, and cargo does not know it read
// them: without this, a new migration file leaves a stale build that never applies it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
