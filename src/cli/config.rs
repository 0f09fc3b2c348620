//! The optional configuration file (`$XDG_CONFIG_HOME/peershare/config.toml`): the defaults a
//! user would otherwise type every time. Its values become the command line's defaults, so a
//! flag overrides an environment variable, which overrides the file, which overrides the
//! built-in default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The file's name in the configuration directory.
pub const CONFIG_FILE: &str = "peershare/config.toml";

/// The environment variable naming another configuration file (as `--config` does).
pub const CONFIG_ENV: &str = "PEERSHARE_CONFIG";

/// Most bytes read from a configuration file (it holds a few lines).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// What the file may say. Every value is checked when the file is read, with the parser of
/// the flag it stands for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// `index`: as --index / PEERSHARE_INDEX (`HOST[:PORT][#KEY]`), normalized.
    pub index: Option<String>,
    /// `index_key`: as --index-key / PEERSHARE_INDEX_KEY.
    pub index_key: Option<String>,
    /// `state_dir`: as --state-dir / PEERSHARE_HOME.
    pub state_dir: Option<PathBuf>,
    /// `download_dir`: as `get -o`.
    pub download_dir: Option<PathBuf>,
    /// `max_upload_rate`: as `share --max-upload-rate`.
    pub max_upload_rate: Option<String>,
    /// `max_download_rate`: as `get --max-download-rate`.
    pub max_download_rate: Option<String>,
    /// `upload_slots`: as `share --upload-slots`.
    pub upload_slots: Option<usize>,
    /// `bootstrap`: as --bootstrap, a list of `HOST:PORT`.
    pub bootstrap: Vec<String>,
}

/// The keys the file may hold, for the message about one it may not.
const KEYS: &[&str] = &[
    "index",
    "index_key",
    "state_dir",
    "download_dir",
    "max_upload_rate",
    "max_download_rate",
    "upload_slots",
    "bootstrap",
];

static LOADED: OnceLock<Config> = OnceLock::new();

/// The configuration this process read (empty before [`load`] or without a file).
pub fn get() -> &'static Config {
    LOADED.get_or_init(Config::default)
}

/// Reads the configuration file chosen by `--config PATH` in `args`, else by PEERSHARE_CONFIG,
/// else the default one if it exists, and keeps it for [`get`]. A file asked for by name must
/// exist; the default one need not.
pub fn load(args: &[OsString]) -> anyhow::Result<&'static Config> {
    let chosen = config_arg(args).or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let config = match chosen {
        Some(path) => read(&path)?,
        None => match default_path() {
            Some(path) if path.exists() => read(&path)?,
            _ => Config::default(),
        },
    };
    Ok(LOADED.get_or_init(|| config))
}

/// `$XDG_CONFIG_HOME/peershare/config.toml`, else `~/.config/peershare/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        // The XDG rule: a relative value is ignored.
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|h| h.join(".config")))?;
    Some(base.join(CONFIG_FILE))
}

/// The value of `--config PATH` or `--config=PATH` among the arguments (before any `--`),
/// looked for before the command line is parsed, since the file sets the parser's defaults.
fn config_arg(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Reads and checks one file.
pub fn read(path: &Path) -> anyhow::Result<Config> {
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("config file {shown}"))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("config file {shown} is a directory, not a file");
    }
    // Bounded: the path may name a device (PEERSHARE_CONFIG=/dev/null reads no file at all).
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
        &mut bytes,
    )
    .with_context(|| format!("config file {shown}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        bail!("config file {shown} is larger than {MAX_CONFIG_BYTES} bytes");
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("config file {shown} is not UTF-8 text"))?;
    parse(&text, path)
}

/// Checks the text of a file (`path` is for the messages).
pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
    let shown = path.display();
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The parser's message spans lines (it quotes the file): its first line, and where.
        let what = e.message().lines().next().unwrap_or("not TOML").to_string();
        let line = e
            .span()
            .map(|s| {
                format!(
                    " on line {}",
                    text[..s.start.min(text.len())].lines().count().max(1)
                )
            })
            .unwrap_or_default();
        anyhow::anyhow!("config file {shown}{line}: {what}")
    })?;
    let mut c = Config {
        path: Some(path.to_path_buf()),
        ..Config::default()
    };
    for (key, value) in &table {
        let bad = |why: &str| anyhow::anyhow!("config file {shown}: {key}: {why}");
        let string = || {
            value
                .as_str()
                .ok_or_else(|| bad("expected a string in quotes"))
        };
        match key.as_str() {
            "index" => {
                let spec = peershare::identity::index_address(string()?)
                    .map_err(|e| bad(&e.to_string()))?;
                c.index = Some(spec);
            }
            "index_key" => {
                let key: peershare::identity::Fingerprint = string()?
                    .parse()
                    .map_err(|e: peershare::identity::BadFingerprint| bad(&e.to_string()))?;
                c.index_key = Some(key.to_string());
            }
            "state_dir" => c.state_dir = Some(dir(string()?).map_err(|e| bad(&e))?),
            "download_dir" => c.download_dir = Some(dir(string()?).map_err(|e| bad(&e))?),
            "max_upload_rate" | "max_download_rate" => {
                let text = match value {
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::String(s) => s.clone(),
                    _ => return Err(bad("expected a rate such as \"10MiB\" (per second)")),
                };
                peershare::rate::parse_rate(&text).map_err(|e| bad(&e))?;
                match key.as_str() {
                    "max_upload_rate" => c.max_upload_rate = Some(text),
                    _ => c.max_download_rate = Some(text),
                }
            }
            "upload_slots" => {
                let n = value
                    .as_integer()
                    .filter(|n| *n >= 1 && *n <= 1 << 20)
                    .ok_or_else(|| bad("expected a whole number of at least 1"))?;
                c.upload_slots = Some(n as usize);
            }
            "bootstrap" => {
                let list = match value {
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("expected a list of \"HOST:PORT\" strings"))?,
                    _ => return Err(bad("expected a list of \"HOST:PORT\" strings")),
                };
                let host_port = |b: &str| {
                    b.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0)
                    })
                };
                if let Some(b) = list.iter().find(|b| !host_port(b)) {
                    return Err(bad(&format!("{b:?} is not HOST:PORT")));
                }
                c.bootstrap = list;
            }
            _ => bail!(
                "config file {shown}: unknown key {key:?} (known keys: {})",
                KEYS.join(", ")
            ),
        }
    }
    Ok(c)
}

/// A directory as written in the file: absolute, or `~/...` under the home directory. A
/// relative one is refused: relative to what would depend on where a command is run.
fn dir(s: &str) -> Result<PathBuf, String> {
    let path = match s.strip_prefix("~/") {
        Some(rest) => dirs::home_dir()
            .ok_or("~ is used but there is no home directory")?
            .join(rest),
        None if s == "~" => dirs::home_dir().ok_or("~ is used but there is no home directory")?,
        None => PathBuf::from(s),
    };
    if !path.is_absolute() {
        return Err(format!(
            "{s:?} is a relative path; write an absolute one or one starting with ~/"
        ));
    }
    Ok(path)
}

/// The command line with the file's values as the defaults of the flags they stand for, in
/// every subcommand that has such a flag (matched by its long name).
pub fn apply(cmd: clap::Command, c: &Config) -> clap::Command {
    // clap keeps default values as `&'static str`; the file is read once per process.
    let keep = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut defaults: Vec<(&str, Vec<&'static str>)> = Vec::new();
    let mut one = |long, v: Option<String>| {
        if let Some(v) = v {
            defaults.push((long, vec![keep(v)]));
        }
    };
    one("index", c.index.clone());
    one("index-key", c.index_key.clone());
    one("max-upload-rate", c.max_upload_rate.clone());
    one("max-download-rate", c.max_download_rate.clone());
    one("upload-slots", c.upload_slots.map(|n| n.to_string()));
    // `get -o`: the one flag named `--output` is the download directory.
    one(
        "output",
        c.download_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
    );
    if !c.bootstrap.is_empty() {
        defaults.push(("bootstrap", c.bootstrap.iter().cloned().map(keep).collect()));
    }
    with_defaults(cmd, &defaults)
}

fn with_defaults(cmd: clap::Command, defaults: &[(&str, Vec<&'static str>)]) -> clap::Command {
    if defaults.is_empty() {
        return cmd;
    }
    cmd.mut_args(|arg| {
        match defaults
            .iter()
            .find(|(long, _)| arg.get_long() == Some(*long))
        {
            Some((_, values)) => arg.default_values(values.iter().copied()),
            None => arg,
        }
    })
    .mut_subcommands(|sub| with_defaults(sub, defaults))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("/c.toml")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        let e = parse(text, Path::new("/c.toml")).unwrap_err().to_string();
        assert!(
            !e.contains('\n') && e.starts_with("config file /c.toml"),
            "{e}"
        );
        e
    }

    #[test]
    fn every_key_is_read_and_checked() {
        let c = parse_ok(
            "index = \"example.org\"\nstate_dir = \"/var/ps\"\ndownload_dir = \"~/dl\"\n\
             max_upload_rate = \"10MiB\"\nmax_download_rate = 1000\nupload_slots = 8\n\
             bootstrap = [\"10.0.0.1:6881\"]\n",
        );
        assert_eq!(c.index.as_deref(), Some("example.org:50000"));
        assert_eq!(c.state_dir, Some(PathBuf::from("/var/ps")));
        assert!(c.download_dir.as_ref().unwrap().ends_with("dl"));
        assert!(c.download_dir.as_ref().unwrap().is_absolute());
        assert_eq!(c.max_upload_rate.as_deref(), Some("10MiB"));
        assert_eq!(c.max_download_rate.as_deref(), Some("1000"));
        assert_eq!(c.upload_slots, Some(8));
        assert_eq!(c.bootstrap, ["10.0.0.1:6881"]);
        assert_eq!(
            parse_ok(""),
            Config {
                path: Some("/c.toml".into()),
                ..Config::default()
            }
        );
    }

    #[test]
    fn bad_files_get_one_line_naming_the_file_and_key() {
        assert!(parse_err("indx = \"a\"").contains("unknown key \"indx\""));
        assert!(parse_err("index = 5").contains(": index: expected a string"));
        assert!(parse_err("index = \"a:0\"").contains(": index: "));
        assert!(parse_err("index_key = \"abc\"").contains(": index_key: "));
        assert!(parse_err("upload_slots = 0").contains(": upload_slots: "));
        assert!(parse_err("max_upload_rate = \"fast\"").contains(": max_upload_rate: "));
        assert!(parse_err("download_dir = \"dl\"").contains("relative path"));
        assert!(parse_err("bootstrap = [1]").contains(": bootstrap: "));
        assert!(parse_err("bootstrap = [\"dht.example.org\"]").contains("is not HOST:PORT"));
        assert!(parse_err("bootstrap = \"h:0\"").contains("is not HOST:PORT"));
        assert!(parse_err("index = \"a\"\nthis is not toml").contains("on line 2"));
    }

    #[test]
    fn the_config_flag_is_found_before_parsing() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_arg(&args(&["ps", "search", "--config", "/x", "a"])),
            Some("/x".into())
        );
        assert_eq!(
            config_arg(&args(&["ps", "--config=/y", "peers"])),
            Some("/y".into())
        );
        assert_eq!(config_arg(&args(&["ps", "search", "--", "--config"])), None);
        assert_eq!(config_arg(&args(&["ps", "peers"])), None);
    }
}
