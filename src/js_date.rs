//! Instants written as JavaScript's `Date` writes them, where a Node server's output holds one:
//! the handshake's `time`, and the dates another node's messages carry.

/// The proleptic Gregorian date of a count of days since 1970-01-01: (year, month 1–12, day).
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Years starting in March, so that the leap day ends each 4-, 100- and 400-year cycle.
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let of_era = z.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1_460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * of_year + 2) / 153;
    let day = of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// A UTC instant as `Date.prototype.toString` writes it on a server in UTC
/// (`Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)`): Node's handshake `time`.
pub(crate) fn to_utc_string(unix_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX);
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        day,
        year,
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// `new Date(ms).toISOString()`, or `None` for an invalid date (which `JSON.stringify` writes
/// as `null`).
#[cfg(feature = "redis")]
pub(crate) fn to_iso_string(ms: f64) -> Option<String> {
    // A Date's range: 100,000,000 days either side of the epoch; its time is whole ms.
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return None;
    }
    let ms = ms.trunc() as i64;
    let (days, of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_date(days);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{}{:06}", if year < 0 { '-' } else { '+' }, year.abs())
    };
    Some(format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_javascript_writes_them() {
        let cases = [
            (0, "Thu Jan 01 1970 00:00:00"),
            (951_782_400_000, "Tue Feb 29 2000 00:00:00"),
            (1_764_954_000_123, "Fri Dec 05 2025 17:00:00"),
            (4_107_542_399_000, "Sun Feb 28 2100 23:59:59"),
        ];
        for (ms, date) in cases {
            assert_eq!(
                to_utc_string(ms),
                format!("{date} GMT+0000 (Coordinated Universal Time)")
            );
        }
    }
}
