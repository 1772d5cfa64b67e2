//! The XML bodies of the GameStream HTTP(S) API, in the element order real hosts use.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// `<root status_code=".."[ attrs]>children</root>` with a declaration; children are (tag, text).
pub fn root(status_code: u16, attrs: &[(&str, &str)], children: &[(&str, &str)]) -> String {
    let mut w = Writer::new(Vec::with_capacity(256));
    let code = status_code.to_string();
    let mut start = BytesStart::new("root");
    start.push_attribute(("status_code", code.as_str()));
    for a in attrs {
        start.push_attribute(*a);
    }
    // Writing into a Vec cannot fail; the results are ignored on purpose.
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
    if children.is_empty() {
        let _ = w.write_event(Event::Empty(start));
    } else {
        let _ = w.write_event(Event::Start(start));
        for (tag, text) in children {
            let _ = w.write_event(Event::Start(BytesStart::new(*tag)));
            let _ = w.write_event(Event::Text(BytesText::new(text)));
            let _ = w.write_event(Event::End(BytesEnd::new(*tag)));
        }
        let _ = w.write_event(Event::End(BytesEnd::new("root")));
    }
    String::from_utf8_lossy(&w.into_inner()).into_owned()
}

/// An error reply: clients print `status_message`.
pub fn error(status_code: u16, query: &str, message: &str) -> String {
    root(status_code, &[("query", query), ("status_message", message)], &[])
}

pub fn ok(children: &[(&str, &str)]) -> String {
    root(200, &[], children)
}

/// The unpaired-certificate answer clients expect on HTTPS (HTTP 200, never a reset).
pub fn unauthorized(query: &str) -> String {
    error(401, query, "The client is not authorized. Certificate verification failed.")
}

pub const APP_VERSION: &str = "7.1.431.-1";
pub const GFE_VERSION: &str = "3.23.0.74";
pub const GS_VERSION: &str = "7.1.431";
/// `ServerCodecModeSupport` bits (SCM_*).
pub const SCM_H264: u32 = 0x1;
pub const SCM_HEVC: u32 = 0x100;

#[derive(Debug, Clone)]
pub struct ServerInfo<'a> {
    pub hostname: &'a str,
    pub uniqueid: &'a str,
    pub https_port: u16,
    pub http_port: u16,
    pub hevc: bool,
    pub mac: &'a str,
    pub local_ip: &'a str,
    /// Shown by clients as "GPU": the encoder in use.
    pub gpu_type: &'a str,
    pub paired: bool,
    pub current_game: u32,
    pub busy: bool,
}

pub fn serverinfo(s: &ServerInfo<'_>) -> String {
    let https = s.https_port.to_string();
    let http = s.http_port.to_string();
    let codecs = (SCM_H264 | if s.hevc { SCM_HEVC } else { 0 }).to_string();
    let game = if s.busy { s.current_game.to_string() } else { "0".to_owned() };
    ok(&[
        ("hostname", s.hostname),
        ("appversion", APP_VERSION),
        ("GfeVersion", GFE_VERSION),
        ("uniqueid", s.uniqueid),
        ("HttpsPort", &https),
        ("ExternalPort", &http),
        ("MaxLumaPixelsHEVC", if s.hevc { "1869449984" } else { "0" }),
        ("mac", s.mac),
        ("LocalIP", s.local_ip),
        ("ServerCodecModeSupport", &codecs),
        ("gputype", s.gpu_type),
        ("GsVersion", GS_VERSION),
        ("PairStatus", if s.paired { "1" } else { "0" }),
        ("currentgame", &game),
        ("state", if s.busy { "SUNSHINE_SERVER_BUSY" } else { "SUNSHINE_SERVER_FREE" }),
    ])
}

pub fn applist<'a>(apps: impl IntoIterator<Item = (&'a str, u32)>) -> String {
    let mut w = Writer::new(Vec::with_capacity(256));
    let mut start = BytesStart::new("root");
    start.push_attribute(("status_code", "200"));
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
    let _ = w.write_event(Event::Start(start));
    for (title, id) in apps {
        let id = id.to_string();
        let _ = w.write_event(Event::Start(BytesStart::new("App")));
        for (tag, text) in [("AppTitle", title), ("ID", id.as_str()), ("IsHdrSupported", "0")] {
            let _ = w.write_event(Event::Start(BytesStart::new(tag)));
            let _ = w.write_event(Event::Text(BytesText::new(text)));
            let _ = w.write_event(Event::End(BytesEnd::new(tag)));
        }
        let _ = w.write_event(Event::End(BytesEnd::new("App")));
    }
    let _ = w.write_event(Event::End(BytesEnd::new("root")));
    String::from_utf8_lossy(&w.into_inner()).into_owned()
}

/// Text of the first element named `tag` anywhere in `xml` (how clients read replies).
pub fn find_text(xml: &str, tag: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    let mut out = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().as_ref() == tag.as_bytes() => inside = true,
            Ok(Event::End(e)) if inside && e.name().as_ref() == tag.as_bytes() => return Some(out),
            Ok(Event::Text(t)) if inside => out.push_str(&t.unescape().ok()?),
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// The root's attribute `name` (e.g. `status_code`).
pub fn root_attr(xml: &str, name: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.name().as_ref() == b"root" => {
                let a = e.try_get_attribute(name).ok()??;
                return a.unescape_value().ok().map(|v| v.into_owned());
            }
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(paired: bool) -> String {
        serverinfo(&ServerInfo {
            hostname: "h<&>",
            uniqueid: "c0ffee00-0000-4000-8000-000000000001",
            https_port: 47984,
            http_port: 47989,
            hevc: false,
            mac: "00:00:00:00:00:00",
            local_ip: "127.0.0.1",
            gpu_type: "software",
            paired,
            current_game: 0,
            busy: false,
        })
    }

    #[test]
    fn serverinfo_has_sunshine_order_and_escapes() {
        let x = info(true);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><root status_code=\"200\"><hostname>h&lt;&amp;&gt;</hostname><appversion>7.1.431.-1</appversion>"), "{x}");
        let order = [
            "hostname",
            "appversion",
            "GfeVersion",
            "uniqueid",
            "HttpsPort",
            "ExternalPort",
            "MaxLumaPixelsHEVC",
            "mac",
            "LocalIP",
            "ServerCodecModeSupport",
            "gputype",
            "GsVersion",
            "PairStatus",
            "currentgame",
            "state",
        ];
        let mut last = 0;
        for tag in order {
            let at = x.find(&format!("<{tag}>")).unwrap_or_else(|| panic!("{tag} missing"));
            assert!(at >= last, "{tag} out of order");
            last = at;
        }
        assert_eq!(find_text(&x, "hostname").as_deref(), Some("h<&>"));
        assert_eq!(find_text(&x, "PairStatus").as_deref(), Some("1"));
        assert_eq!(find_text(&x, "state").as_deref(), Some("SUNSHINE_SERVER_FREE"));
    }

    #[test]
    fn unauthorized_is_the_exact_client_string() {
        assert_eq!(
            unauthorized("/serverinfo"),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><root status_code=\"401\" query=\"/serverinfo\" status_message=\"The client is not authorized. Certificate verification failed.\"/>"
        );
        assert_eq!(root_attr(&unauthorized("/x"), "status_code").as_deref(), Some("401"));
    }

    #[test]
    fn applist_lists_apps() {
        let x = applist([("Test pattern", 1), ("A & B", 7)]);
        assert!(x.contains("<App><AppTitle>Test pattern</AppTitle><ID>1</ID><IsHdrSupported>0</IsHdrSupported></App>"));
        assert!(x.contains("<AppTitle>A &amp; B</AppTitle><ID>7</ID>"));
    }
}
