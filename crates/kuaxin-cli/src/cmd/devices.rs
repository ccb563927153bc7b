use anyhow::Result;

pub fn main() -> Result<i32> {
    for d in kuaxin::list_devices() {
        println!("{:<8} {:<6} {}", d.name, d.kind, d.description);
    }
    for n in kuaxin::device_notes() {
        eprintln!("{n}");
    }
    Ok(0)
}
