//! The command-line flags both binaries read: `--flag value` pairs, and switches without a value.

/// The command line's flags in order, each with its value; a flag in `switches` has none.
pub fn flags(switches: &[&str]) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if switches.contains(&flag.as_str()) {
            out.push((flag, None));
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        out.push((flag, Some(value)));
    }
    Ok(out)
}

/// A flag's value as a whole number, or an error naming the flag.
pub fn whole_number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("{flag}: not a whole number: {value}"))
}
