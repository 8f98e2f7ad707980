//! (being written)
pub fn to_svg(_r: &super::ProfileReport) -> String {
    String::new()
}
