//! Asking the menu's questions one line at a time, and reading the answers: IP addresses or
//! host names, ports, choices, yes or no.

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Longest answer read; a longer line is refused and asked again (a script gone wrong, e.g.
/// a binary file piped in, must not make the menu hold it all).
pub const MAX_ANSWER: usize = 4096;

/// Why the menu stops before the end of a flow.
#[derive(Debug)]
pub enum Stop {
    /// "0" (or "q") at a menu, or the end of input where a menu waits for a choice: the
    /// user is done. Also when the output is closed: no one reads the questions.
    Quit,
    /// The input ended in the middle of a flow, while asking this.
    Eof(String),
}

/// A line of input.
enum Answer {
    Line(String),
    TooLong,
    End,
}

/// The menu's input and output, and what it asks and says.
pub struct Prompter<'a, R, W> {
    input: &'a mut R,
    out: &'a mut W,
    /// The output is closed (e.g. piped into `head`): nobody reads the questions any more.
    closed: bool,
}

impl<'a, R: BufRead, W: Write> Prompter<'a, R, W> {
    pub fn new(input: &'a mut R, out: &'a mut W) -> Self {
        Prompter {
            input,
            out,
            closed: false,
        }
    }

    /// Prints one line. Lines quote names, hosts and errors from the network: the line is
    /// escaped whole, so a name cannot drive the terminal or forge a line.
    pub fn say(&mut self, text: &str) {
        let written = writeln!(self.out, "{}", peershare::text::Escaped(text))
            .and_then(|()| self.out.flush());
        self.closed |= written.is_err();
    }

    /// The next line of input, trimmed.
    fn answer(&mut self) -> Answer {
        let mut line = Vec::new();
        let limit = MAX_ANSWER as u64 + 1;
        match (&mut *self.input).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Answer::End,
            Ok(_) => {}
        }
        if line.len() > MAX_ANSWER && !line.ends_with(b"\n") {
            // Skip the rest of the overlong line, so its tail is not taken as the next answer.
            loop {
                line.clear();
                match (&mut *self.input).take(limit).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return Answer::End,
                    Ok(_) if line.ends_with(b"\n") => return Answer::TooLong,
                    Ok(_) => {}
                }
            }
        }
        Answer::Line(String::from_utf8_lossy(&line).trim().to_string())
    }

    /// Prints `question` on a line of its own (a script's output then reads line by line)
    /// and asks until `parse` accepts the answer. The end of input is [`Stop::Eof`].
    pub fn ask<T>(
        &mut self,
        question: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, Stop> {
        self.say(question);
        loop {
            if self.closed {
                // No one sees the question: stop here, quietly, as at the end of input.
                return Err(Stop::Quit);
            }
            let answer = match self.answer() {
                Answer::Line(a) => a,
                Answer::End => return Err(Stop::Eof(question.to_string())),
                Answer::TooLong => {
                    self.say(&format!(
                        "That answer is longer than {MAX_ANSWER} bytes; please answer again"
                    ));
                    continue;
                }
            };
            match parse(&answer) {
                Ok(v) => return Ok(v),
                Err(msg) => self.say(&msg),
            }
        }
    }

    /// Shows a menu's `options` (the original lines), then "0 - Quit", and asks for a
    /// number. "0", "q" or "quit", and the end of input here, are [`Stop::Quit`].
    pub fn menu(&mut self, options: &[&str], question: &str) -> Result<usize, Stop> {
        for o in options {
            self.say(o);
        }
        self.say("0 - Quit");
        let max = options.len();
        let pick = self.ask(question, |a| match a.to_ascii_lowercase().as_str() {
            "0" | "q" | "quit" => Ok(0),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "\"{a}\" is not a choice; please enter a number from 1 to {max}, or 0 to quit"
                )),
            },
        });
        match pick {
            Ok(0) | Err(Stop::Eof(_)) => Err(Stop::Quit),
            other => other,
        }
    }
}

/// An address typed where the original asked for an IP: the address, and how to show it.
#[derive(Debug, Clone)]
pub struct Host {
    pub ip: IpAddr,
    /// "localhost" for 0 and localhost, else the address as typed (a name, or an IP).
    pub shown: String,
}

/// Reads an IP address, "0" or "localhost" (127.0.0.1, as the original's "0 for localhost"),
/// or a host name, looked up here once (the index and peers deal in IP addresses only).
pub fn host(answer: &str) -> Result<Host, String> {
    if answer == "0" || answer.eq_ignore_ascii_case("localhost") {
        return Ok(Host {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            shown: "localhost".into(),
        });
    }
    if let Some(ip) = peershare::protocol::host::parse_ip(answer) {
        return Ok(Host {
            ip,
            shown: answer.to_string(),
        });
    }
    let hint = "enter an IP address like 192.168.1.20, a host name, or 0 for localhost";
    if answer.is_empty() {
        return Err(format!("Please {hint}"));
    }
    // Only what can be a DNS name is looked up (no spaces, no ports, no control characters).
    if answer.len() > 253
        || !answer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "\"{answer}\" is not an IP address or host name; {hint}"
        ));
    }
    let addrs: Vec<SocketAddr> = match (answer, 0).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return Err(format!("cannot resolve \"{answer}\" ({e}); {hint}")),
    };
    // IPv4 first: an index or peer reached by name most often listens on it.
    match addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()) {
        Some(a) => Ok(Host {
            ip: a.ip(),
            shown: answer.to_string(),
        }),
        None => Err(format!("\"{answer}\" has no address; {hint}")),
    }
}

/// Reads a port number; 0 ("any free port") only where `allow_zero`.
pub fn port(allow_zero: bool) -> impl Fn(&str) -> Result<u16, String> {
    move |answer| {
        let lowest = if allow_zero { 0 } else { 1 };
        match answer.parse::<u16>() {
            Ok(p) if p >= lowest => Ok(p),
            _ => Err(format!(
                "\"{answer}\" is not a port number; please enter a number from {lowest} to 65535{}",
                if allow_zero {
                    " (0: any free port)"
                } else {
                    ""
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(input: &str, f: impl FnOnce(&mut Prompter<&[u8], Vec<u8>>) -> T) -> (T, String) {
        let mut inp = input.as_bytes();
        let mut out = Vec::new();
        let r = f(&mut Prompter::new(&mut inp, &mut out));
        (r, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn asks_again_until_the_answer_parses_and_says_why() {
        let (r, out) = run("abc\n0\n70000\n  8080  \n", |p| p.ask("Port?", port(false)));
        assert_eq!(r.ok(), Some(8080));
        assert_eq!(out.lines().next(), Some("Port?"));
        assert_eq!(out.matches("is not a port number").count(), 3, "{out}");
    }

    #[test]
    fn the_end_of_input_is_eof_in_a_flow_and_quit_at_a_menu() {
        let (r, _) = run("", |p| p.ask("Port?", port(true)));
        assert!(matches!(r, Err(Stop::Eof(q)) if q == "Port?"));
        let (r, out) = run("", |p| p.menu(&["1 - A", "2 - B"], "Pick"));
        assert!(matches!(r, Err(Stop::Quit)));
        assert_eq!(out, "1 - A\n2 - B\n0 - Quit\nPick\n");
        for quit in ["0\n", "q\n", "QUIT\n"] {
            let (r, _) = run(quit, |p| p.menu(&["1 - A"], "Pick"));
            assert!(matches!(r, Err(Stop::Quit)), "{quit:?}");
        }
        let (r, out) = run("3\nx\n2\n", |p| p.menu(&["1 - A", "2 - B"], "Pick"));
        assert_eq!(r.ok(), Some(2));
        assert_eq!(out.matches("is not a choice").count(), 2);
    }

    #[test]
    fn an_overlong_answer_is_refused_whole_and_invalid_utf8_read_lossily() {
        let long = "9".repeat(3 * MAX_ANSWER);
        let (r, out) = run(&format!("{long}\n80\n"), |p| p.ask("Port?", port(false)));
        assert_eq!(r.ok(), Some(80));
        assert!(out.contains("longer than"), "{out}");
        let mut inp: &[u8] = b"\xff\xfe\n";
        let mut out = Vec::new();
        let mut p = Prompter::new(&mut inp, &mut out);
        let r = p.ask("Name?", |a| Ok::<_, String>(a.to_string()));
        assert_eq!(r.ok().as_deref(), Some("\u{fffd}\u{fffd}"));
    }

    #[test]
    fn hosts_0_localhost_ips_and_names() {
        assert_eq!(
            host("0").map(|h| h.shown).ok().as_deref(),
            Some("localhost")
        );
        let h = host("LocalHost").expect("localhost");
        assert_eq!(h.ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(host("10.1.2.3").expect("ip").ip.to_string(), "10.1.2.3");
        assert_eq!(host("[::1]").expect("ip6").ip.to_string(), "::1");
        assert!(host("").is_err());
        assert!(host("a b").is_err());
        assert!(host("10.0.0.1:80").is_err());
    }

    /// An output that takes `left` bytes, then fails as a closed pipe does.
    struct Closing {
        left: usize,
    }

    impl Write for Closing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_output_stops_the_questions() {
        let mut inp: &[u8] = b"1\n2\n";
        let mut out = Closing { left: 3 };
        let mut p = Prompter::new(&mut inp, &mut out);
        assert!(matches!(p.ask("Port?", port(false)), Err(Stop::Quit)));
        assert_eq!(inp, b"1\n2\n", "no answer read");
    }

    #[test]
    fn the_message_of_a_bad_answer_is_escaped() {
        let (_, out) = run("\x1b[31m\n1\n", |p| p.ask("Port?", port(false)));
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("\\x1b[31m"), "{out}");
    }
}
