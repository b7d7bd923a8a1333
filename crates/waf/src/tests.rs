//! Engine tests on small hand-written rule sets: each action and variable family, errors, anomaly scoring.

use std::net::{IpAddr, Ipv4Addr};

use crate::{EngineMode, RequestHead, RuleSet, Transaction};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

fn rs(src: &str) -> RuleSet {
    match RuleSet::parse_str(src, "test.conf") {
        Ok(r) => r,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn head<'a>(method: &'a str, uri: &'a str, headers: &[(&'a str, &'a str)]) -> RequestHead<'a> {
    RequestHead {
        method,
        uri: uri.as_bytes(),
        protocol: "HTTP/1.1",
        headers: headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect(),
    }
}

fn run<'a>(set: &'a RuleSet, uri: &str, headers: &[(&str, &str)], body: &str) -> Transaction<'a> {
    let mut tx = set.transaction("id-1", LOCAL);
    let method = if body.is_empty() { "GET" } else { "POST" };
    tx.process_request_headers(&head(method, uri, headers));
    tx.process_request_body(body.as_bytes());
    tx
}

fn ids(tx: &Transaction<'_>) -> Vec<u32> {
    tx.matches().iter().map(|m| m.id).collect()
}

/// `src` loaded twice, the second with the verdict memo off: what a test of the memo's shortcuts compares against.
fn memo_on_and_off(src: &str) -> (RuleSet, RuleSet) {
    let mut off = rs(src);
    off.set_verdict_memo(false);
    (rs(src), off)
}

/// Each of `uris` twice over (the second time from the memo) through `on` and `off`: both match the same rules and
/// give the same `extra`, and each rule of `every` matches on some request and not on another (not vacuous).
fn same_as_memo_off<T: PartialEq + std::fmt::Debug>(
    (on, off): &(RuleSet, RuleSet),
    uris: &[&str],
    every: std::ops::RangeInclusive<u32>,
    extra: impl Fn(&Transaction<'_>) -> T,
) {
    let mut seen = Vec::new();
    for uri in uris.iter().chain(uris) {
        let (a, b) = (run(on, uri, &[("Host", "h")], ""), run(off, uri, &[("Host", "h")], ""));
        assert_eq!((ids(&a), extra(&a)), (ids(&b), extra(&b)), "{uri}");
        seen.push(ids(&a));
    }
    for id in every {
        let n = seen.iter().filter(|m| m.contains(&id)).count();
        assert!(n > 0 && n < seen.len(), "rule {id}: {n}");
    }
}

#[test]
fn load_errors_name_file_and_line() {
    let e = RuleSet::parse_str("SecRuleEngine On\n\nSecRule ARGS \"@rx a\" \"id:1,frob\"\n", "x.conf").unwrap_err();
    assert_eq!(e.to_string(), "x.conf:3: unknown action frob");
    let e = RuleSet::parse_str("SecFoo bar\n", "y.conf").unwrap_err();
    assert_eq!((e.line, e.reason.as_str()), (1, "unknown directive SecFoo"));
    let e = RuleSet::parse_str("SecRule NOPE \"@rx a\" \"id:1\"", "y.conf").unwrap_err();
    assert_eq!(e.reason, "unknown variable NOPE");
    let e = RuleSet::parse_str("SecRule ARGS \"@nope a\" \"id:1\"", "y.conf").unwrap_err();
    assert_eq!(e.line, 1);
    let e =
        RuleSet::parse_str("SecRule ARGS \"@rx a\" \"id:1\"\nSecRule ARGS \"@rx b\" \"id:1\"", "y.conf").unwrap_err();
    assert_eq!((e.line, e.reason.as_str()), (2, "duplicate rule id 1"));
    let e = RuleSet::parse_str("SecRule ARGS \"@rx a\" \"id:1,chain\"\n", "y.conf").unwrap_err();
    assert!(e.reason.contains("chain"), "{e}");
    let e = RuleSet::parse_str("SecRule ARGS \"@rx a\" \\\n  \"id:1,\\\n  phase:9\"\nX", "y.conf").unwrap_err();
    assert_eq!((e.line, e.reason.as_str()), (1, "invalid phase 9"));
}

#[test]
fn include_with_glob_is_relative_to_the_including_file() {
    let dir = std::env::temp_dir().join(format!("waf-inc-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("main.conf"), "SecRuleEngine On\nInclude rules/*.conf\n").unwrap();
    std::fs::write(dir.join("rules/a.conf"), "SecAction \"id:1,phase:1,pass,setvar:tx.a=1\"\n").unwrap();
    std::fs::write(dir.join("rules/b.conf"), "SecAction \"id:2,phase:1,pass,setvar:tx.b=%{tx.a}\"\n").unwrap();
    std::fs::write(dir.join("rules/c.conf.example"), "garbage\n").unwrap();
    let set = RuleSet::load(&[dir.join("main.conf")], "SecAction \"id:3,phase:1,pass,setvar:tx.c=3\"").unwrap();
    assert_eq!(set.rule_count(), 3);
    let tx = run(&set, "/", &[], "");
    assert_eq!(ids(&tx), [1, 2, 3]);
    assert_eq!(tx.var("tx.b").as_deref(), Some("1"));
    std::fs::write(dir.join("rules/b.conf"), "SecAction \"id:2,phase:1,pass,\n").unwrap();
    let e = RuleSet::load(&[dir.join("main.conf")], "").unwrap_err();
    assert_eq!(e.file, dir.join("rules/b.conf"));
    assert_eq!(e.line, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deny_intervenes_in_on_mode_only() {
    let src = "SecRuleEngine On\nSecRule ARGS:q \"@rx evil\" \"id:10,phase:1,deny,status:406,msg:'bad %{MATCHED_VAR_NAME}'\"\n\
               SecAction \"id:11,phase:1,pass\"";
    let set = rs(src);
    let mut tx = set.transaction("u", LOCAL);
    let iv = tx.process_request_headers(&head("GET", "/?q=very+evil", &[])).unwrap();
    assert_eq!((iv.status, iv.rule_id, iv.msg.as_str()), (406, 10, "bad ARGS:q"));
    assert_eq!(ids(&tx), [10]);
    assert_eq!(tx.process_request_body(b""), None);
    let mut tx = set.transaction("u", LOCAL);
    tx.set_engine_mode(EngineMode::DetectionOnly);
    assert_eq!(tx.process_request_headers(&head("GET", "/?q=evil", &[])), None);
    assert_eq!(ids(&tx), [10, 11]);
    let off = rs(&src.replace("SecRuleEngine On", "SecRuleEngine Off"));
    assert!(ids(&run(&off, "/?q=evil", &[], "")).is_empty());
}

#[test]
fn block_follows_the_default_action_of_the_phase() {
    let set = rs(
        "SecRuleEngine On\nSecDefaultAction \"phase:2,log,pass\"\nSecDefaultAction \"phase:1,log,deny,status:418\"\n\
                  SecRule ARGS \"@rx x\" \"id:1,phase:2,block\"\nSecRule ARGS \"@rx x\" \"id:2,phase:1,block\"",
    );
    let mut tx = set.transaction("u", LOCAL);
    let iv = tx.process_request_headers(&head("GET", "/?a=x", &[])).unwrap();
    assert_eq!((iv.status, iv.rule_id), (418, 2));
    let set =
        rs("SecRuleEngine On\nSecDefaultAction \"phase:2,log,pass\"\nSecRule ARGS \"@rx x\" \"id:1,phase:2,block\"");
    let tx = run(&set, "/?a=x", &[], "");
    assert_eq!((ids(&tx), tx.interrupted()), (vec![1], None));
}

#[test]
fn chains_need_every_rule_and_use_the_starter_actions() {
    let set = rs(r#"SecRuleEngine On
SecRequestBodyAccess On
SecRule REQUEST_METHOD "@streq POST" "id:1,phase:2,deny,status:403,chain,msg:'post with %{tx.1}'"
    SecRule ARGS:cmd "@rx ^(\w+) (\w+)" "capture,chain"
        SecRule TX:1 "@streq rm" "setvar:tx.hit=%{tx.2}""#);
    let tx = run(&set, "/", &[("Content-Type", "application/x-www-form-urlencoded")], "cmd=ls+tmp");
    assert!(ids(&tx).is_empty());
    assert_eq!(tx.var("tx.hit"), None);
    let tx = run(&set, "/", &[("Content-Type", "application/x-www-form-urlencoded")], "cmd=rm+tmp");
    assert_eq!(ids(&tx), [1]);
    assert_eq!(tx.var("tx.hit").as_deref(), Some("tmp"));
    let iv = tx.interrupted().unwrap();
    assert_eq!((iv.rule_id, iv.msg.as_str()), (1, "post with rm"));
}

#[test]
fn skip_and_skip_after_markers_and_ids() {
    let set = rs(r#"SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,skip:1"
SecAction "id:2,phase:1,pass"
SecAction "id:3,phase:1,pass,skipAfter:END"
SecAction "id:4,phase:1,pass"
SecAction "id:5,phase:2,pass"
SecMarker END
SecAction "id:6,phase:1,pass,skipAfter:8"
SecAction "id:7,phase:1,pass"
SecAction "id:8,phase:1,pass"
SecAction "id:9,phase:1,pass""#);
    let tx = run(&set, "/", &[], "");
    assert_eq!(ids(&tx), [1, 3, 6, 9, 5]);
    assert!(!tx.matches()[0].log);
}

#[test]
fn setvar_forms_and_macros() {
    let set = rs(r#"SecRuleEngine On
SecAction "id:1,phase:1,pass,setvar:tx.n=5,setvar:tx.n=+3,setvar:'tx.m=-%{tx.n}',setvar:tx.n=-1,setvar:tx.flag,setvar:TX.Mixed=a"
SecAction "id:2,phase:1,pass,setvar:'tx.host=%{REQUEST_HEADERS.host}',setvar:tx.%{rule.id}-x=%{tx.mixed},setvar:!tx.flag"
SecRule REQUEST_HEADERS:Host "@rx ^(.+)$" "id:3,phase:1,pass,setvar:tx.mv=%{MATCHED_VAR_NAME}=%{MATCHED_VAR}""#);
    let tx = run(&set, "/", &[("Host", "example.org")], "");
    assert_eq!(tx.var("tx.n").as_deref(), Some("7"));
    assert_eq!(tx.var("tx.m").as_deref(), Some("-8"));
    assert_eq!(tx.var("tx.flag"), None);
    assert_eq!(tx.var("TX.MIXED").as_deref(), Some("a"));
    assert_eq!(tx.var("tx.host").as_deref(), Some("example.org"));
    assert_eq!(tx.var("tx.2-x").as_deref(), Some("a"));
    assert_eq!(tx.var("tx.mv").as_deref(), Some("REQUEST_HEADERS:Host=example.org"));
}

#[test]
fn variables_selection_exclusion_and_counts() {
    let set = rs(r#"SecRuleEngine On
SecRequestBodyAccess On
SecRule ARGS|!ARGS:safe|!ARGS:/^ign/ "@rx bad" "id:1,phase:2,pass"
SecRule &ARGS "@eq 4" "id:2,phase:2,pass"
SecRule &ARGS:nope "@eq 0" "id:3,phase:2,pass"
SecRule ARGS_NAMES "@rx ^ignore_me$" "id:4,phase:2,pass"
SecRule REQUEST_COOKIES:/^sess/ "@rx ^abc$" "id:5,phase:1,pass"
SecRule REQUEST_FILENAME "@streq /a/b.php" "id:6,phase:1,pass"
SecRule REQUEST_BASENAME "@streq b.php" "id:7,phase:1,pass"
SecRule QUERY_STRING "@streq safe=bad&x=1" "id:8,phase:1,pass"
SecRule REQUEST_LINE "@streq GET /a/b.php?safe=bad&x=1 HTTP/1.1" "id:9,phase:1,pass"
SecRule ARGS_POST:p "@streq bad" "id:10,phase:2,pass"
SecRule ARGS_GET_NAMES "@streq p" "id:11,phase:2,pass"
SecRule REQUEST_HEADERS_NAMES "@rx ^cookie$" "id:12,phase:1,pass,t:lowercase"
SecRule ARGS_COMBINED_SIZE "@eq 25" "id:13,phase:2,pass"
SecRule REQUEST_BODY "@streq p=bad&ignore_me=bad" "id:14,phase:2,pass"
SecRule REMOTE_ADDR "@streq 10.0.0.7" "id:15,phase:1,pass"
SecRule UNIQUE_ID "@streq id-1" "id:16,phase:1,pass""#);
    let mut tx = set.transaction("id-1", LOCAL);
    tx.process_request_headers(&head(
        "GET",
        "/a/b.php?safe=bad&x=1",
        &[("Cookie", "session=abc; other=abc"), ("Content-Type", "application/x-www-form-urlencoded")],
    ));
    tx.process_request_body(b"p=bad&ignore_me=bad");
    assert_eq!(ids(&tx), [5, 6, 7, 8, 9, 12, 15, 16, 1, 2, 3, 4, 10, 13, 14]);
    assert_eq!(tx.matches().iter().find(|m| m.id == 1).unwrap().var_name, "ARGS:p");
}

#[test]
fn transformations_multimatch_and_t_none() {
    let set = rs(r#"SecRuleEngine On
SecDefaultAction "phase:2,log,pass,t:lowercase"
SecRule ARGS:a "@streq abc" "id:1"
SecRule ARGS:a "@streq ABC" "id:2,t:none"
SecRule ARGS:b "@streq <x>" "id:3,t:none,t:urlDecode,t:htmlEntityDecode"
SecRule ARGS:b "@rx %3C" "id:4,t:none,t:urlDecode,multiMatch""#);
    let tx = run(&set, "/?a=ABC&b=%253Cx%253E", &[], "");
    assert_eq!(ids(&tx), [1, 2, 3, 4]);
    let tx = run(&set, "/?b=%26lt;x%26gt;", &[], "");
    assert_eq!(ids(&tx), [3]);
}

#[test]
fn ctl_actions_change_this_transaction_only() {
    let set = rs(r#"SecRuleEngine On
SecRule ARGS:off "@streq 1" "id:1,phase:1,pass,nolog,ctl:ruleRemoveById=10-11,ctl:ruleRemoveByTag=t1,ctl:ruleRemoveTargetById=13;ARGS:a,ctl:ruleRemoveTargetByTag=t2;ARGS:b"
SecRule ARGS "@rx x" "id:10,phase:2,deny"
SecRule ARGS "@rx x" "id:12,phase:2,pass,tag:t1"
SecRule ARGS "@rx x" "id:13,phase:2,pass"
SecRule ARGS "@rx x" "id:14,phase:2,pass,tag:t2"
SecRule ARGS "@rx x" "id:15,phase:2,pass,ctl:ruleEngine=Off"
SecAction "id:16,phase:2,pass""#);
    let tx = run(&set, "/?off=1&a=x", &[], "");
    assert_eq!(ids(&tx), [1, 14, 15]);
    let tx = run(&set, "/?off=1&b=x", &[], "");
    assert_eq!(ids(&tx), [1, 13, 15]);
    let mut tx = set.transaction("u", LOCAL);
    tx.remove_rule_ids(&[10..=10]);
    tx.remove_rule_target(13, "ARGS:c");
    tx.process_request_headers(&head("GET", "/?c=x", &[]));
    tx.process_request_body(b"");
    assert_eq!(ids(&tx), [12, 14, 15]);
    let tx = run(&set, "/?a=x", &[], "");
    assert_eq!(tx.interrupted().map(|i| i.rule_id), Some(10));
}

#[test]
fn body_processors_by_content_type_and_ctl() {
    let set = rs(r#"SecRuleEngine On
SecRequestBodyAccess On
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:1,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:2,phase:2,pass,msg:'%{REQBODY_ERROR_MSG}'"
SecRule ARGS:json.a.b "@streq x" "id:3,phase:2,pass"
SecRule REQBODY_PROCESSOR "@streq JSON" "id:4,phase:2,pass""#);
    let tx = run(&set, "/", &[("Content-Type", "application/json")], r#"{"a":{"b":"x"}}"#);
    assert_eq!(ids(&tx), [1, 3, 4]);
    let tx = run(&set, "/", &[("Content-Type", "application/json")], r#"{"a":"#);
    assert_eq!(ids(&tx), [1, 2, 4]);
    assert!(!tx.matches()[1].msg.is_empty());
}

#[test]
fn allow_stops_later_rules() {
    let set = rs(r#"SecRuleEngine On
SecRule REQUEST_URI "@beginsWith /health" "id:1,phase:1,allow"
SecAction "id:2,phase:1,deny"
SecAction "id:3,phase:2,deny""#);
    let tx = run(&set, "/health", &[], "");
    assert_eq!((ids(&tx), tx.interrupted()), (vec![1], None));
    let tx = run(&set, "/x", &[], "");
    assert_eq!(tx.interrupted().map(|i| i.rule_id), Some(2));
}

#[test]
fn load_time_removal_and_target_updates() {
    let set = rs(r#"SecRuleEngine On
SecRule ARGS "@rx x" "id:1,phase:1,pass,tag:'a/b'"
SecRule ARGS "@rx x" "id:2,phase:1,pass"
SecRule ARGS "@rx x" "id:3,phase:1,pass"
SecRule ARGS "@rx x" "id:4,phase:1,pass"
SecRuleRemoveById 2 4-9
SecRuleRemoveByTag ^a/
SecRuleUpdateTargetById 3 "!ARGS:skip""#);
    assert_eq!(set.rule_count(), 1);
    assert!(ids(&run(&set, "/?skip=x", &[], "")).is_empty());
    assert_eq!(ids(&run(&set, "/?y=x", &[], "")), [3]);
}

/// Anomaly scoring exactly as CRS expresses it: rules add to a score, a later rule compares to the threshold.
#[test]
fn anomaly_scoring_blocks_at_the_threshold() {
    let src = r#"SecRuleEngine On
SecDefaultAction "phase:1,log,auditlog,pass"
SecDefaultAction "phase:2,log,auditlog,pass"
SecAction "id:900110,phase:1,pass,nolog,setvar:tx.inbound_anomaly_score_threshold=5"
SecAction "id:901100,phase:1,pass,nolog,setvar:tx.critical_anomaly_score=5,setvar:tx.warning_anomaly_score=3,setvar:tx.inbound_anomaly_score_pl1=0"
SecRule &TX:blocking_paranoia_level "@eq 0" "id:901120,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=1"
SecRule TX:BLOCKING_PARANOIA_LEVEL "@lt 1" "id:911011,phase:1,pass,nolog,skipAfter:END-911"
SecRule TX:BLOCKING_PARANOIA_LEVEL "@lt 1" "id:911012,phase:2,pass,nolog,skipAfter:END-911"
SecRule ARGS "@rx attack" "id:911100,phase:2,block,severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule ARGS "@rx odd" "id:911110,phase:2,block,severity:'WARNING',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.warning_anomaly_score}'"
SecMarker END-911
SecAction "id:949060,phase:2,pass,nolog,setvar:'tx.blocking_inbound_anomaly_score=%{tx.inbound_anomaly_score_pl1}'"
SecRule TX:BLOCKING_INBOUND_ANOMALY_SCORE "@ge %{tx.inbound_anomaly_score_threshold}" "id:949110,phase:2,deny,t:none,msg:'Inbound Anomaly Score Exceeded (Total Score: %{TX.BLOCKING_INBOUND_ANOMALY_SCORE})'""#;
    let set = rs(src);
    let tx = run(&set, "/?a=odd", &[], "");
    assert_eq!(tx.var("tx.blocking_inbound_anomaly_score").as_deref(), Some("3"), "{:?}", tx.matches());
    assert_eq!(tx.interrupted(), None, "{:?}", tx.matches());
    let tx = run(&set, "/?a=odd&b=odd", &[], "");
    let iv = tx.interrupted().unwrap();
    assert_eq!((iv.status, iv.rule_id), (403, 949110));
    assert_eq!(iv.msg, "Inbound Anomaly Score Exceeded (Total Score: 6)");
    assert_eq!(tx.matches().iter().find(|m| m.id == 911110).unwrap().severity, Some(4));
    let tx = run(&set, "/?a=attack", &[], "");
    assert_eq!(tx.interrupted().map(|i| i.rule_id), Some(949110));
    // The gateway sets the paranoia level before phase 1: level 0 skips the detection rules.
    let mut tx = set.transaction("u", LOCAL);
    tx.set_var("tx.blocking_paranoia_level", "0");
    tx.process_request_headers(&head("GET", "/?a=attack", &[]));
    assert_eq!(tx.process_request_body(b""), None);
    assert_eq!(tx.var("tx.blocking_inbound_anomaly_score").as_deref(), Some("0"));
}

#[test]
fn response_phases_see_status_headers_and_body() {
    let set = rs(r#"SecRuleEngine On
SecResponseBodyAccess On
SecRule RESPONSE_STATUS "@streq 500" "id:1,phase:3,pass"
SecRule RESPONSE_HEADERS:X-Debug "@streq on" "id:2,phase:3,pass"
SecRule RESPONSE_BODY "@rx stack trace" "id:3,phase:4,deny,status:502"
SecAction "id:4,phase:5,pass""#);
    let mut tx = run(&set, "/", &[], "");
    tx.process_response_headers(
        500,
        "HTTP/1.1",
        &[(b"X-Debug", b"on"), (b"Content-Type", b"text/html; charset=utf-8")],
    );
    let iv = tx.process_response_body(b"a stack trace here").unwrap();
    assert_eq!(iv.status, 502);
    tx.process_logging();
    assert_eq!(ids(&tx), [1, 2, 3, 4]);
}

#[test]
fn rule_sets_are_shared_and_transactions_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<RuleSet>();
    send::<Transaction<'static>>();
}

#[test]
fn hostile_numbers_and_lists_do_not_panic() {
    let set = rs(r#"SecRuleEngine On
SecAction "id:1,phase:1,pass,setvar:tx.a=9223372036854775807,setvar:tx.a=+9223372036854775807,setvar:tx.b=-%{tx.a},setvar:tx.b=-9999999999999999999999"
SecRule &TX:a "@eq 1" "id:2,phase:1,pass,skip:4294967295""#);
    let tx = run(&set, "/?%zz=%&&&=&a[]=1", &[("Cookie", ";;=;")], "");
    assert_eq!(tx.var("tx.a").as_deref(), Some("9223372036854775807"));
    assert_eq!(ids(&tx), [1, 2]);
}

#[test]
fn match_texts_are_the_starters_and_a_failed_chain_leaves_none() {
    // Rule 1's chain fails on its second link after its first link matched; rule 2's chain matches, and its
    // record names the starter's variable, not the link's; msg and logdata expand macros at match time.
    let set = rs(r#"SecRuleEngine On
SecRule ARGS:a "@streq x" "id:1,phase:1,pass,log,msg:'one %{MATCHED_VAR}',chain"
    SecRule ARGS:b "@streq nope" ""
SecRule ARGS:a "@streq x" "id:2,phase:1,pass,log,msg:'two %{MATCHED_VAR_NAME}',logdata:'got %{MATCHED_VAR}',chain"
    SecRule REQUEST_HEADERS:Host "@streq hh" ""
SecAction "id:3,phase:1,pass,log,msg:'three'""#);
    let tx = run(&set, "/p?a=x&b=y", &[("Host", "other")], "");
    assert_eq!(ids(&tx), [3]);
    let tx = run(&set, "/p?a=x&b=y", &[("Host", "hh")], "");
    let m = tx.matches();
    assert_eq!(ids(&tx), [2, 3]);
    assert_eq!((m[0].var_name.as_str(), m[0].msg.as_str()), ("ARGS:a", "two REQUEST_HEADERS:Host"));
    assert_eq!(m[0].logdata, "got hh");
    assert_eq!((m[1].var_name.as_str(), m[1].msg.as_str(), m[1].logdata.as_str()), ("", "three", ""));
    let logged: Vec<_> = tx.logged_matches().map(|l| (l.id, l.var_name.into_owned(), l.msg.into_owned())).collect();
    assert_eq!(
        logged,
        [(2, "ARGS:a".to_owned(), "two REQUEST_HEADERS:Host".to_owned()), (3, String::new(), "three".to_owned())]
    );
}

#[test]
fn a_transaction_reusing_a_previous_ones_buffers_decides_the_same() {
    // Buffers are kept per thread between transactions (tx.rs `Scratch`): what the first leaves behind must not
    // show in the second. The reference runs on a new thread, whose pool is empty.
    let set = rs(r#"SecRuleEngine On
SecRule ARGS "@rx ^(a+)$" "id:1,phase:1,pass,log,capture,msg:'m %{TX.1}',setvar:tx.x=%{TX.1}"
SecRule REQUEST_HEADERS|ARGS_NAMES "@contains zz" "id:2,phase:1,pass,log,msg:'zz in %{MATCHED_VAR_NAME}'"
SecRule TX:x "@streq aaa" "id:3,phase:1,pass,log"
SecRule &TX:x "@eq 0" "id:4,phase:1,pass,log""#);
    let summary = |tx: &Transaction<'_>| -> Vec<(u32, String, String)> {
        tx.matches().iter().map(|m| (m.id, m.var_name.clone(), m.msg.clone())).collect()
    };
    let first = run(&set, "/p?q=aaa&zz1=b&zz2=c", &[("X-Zz", "zzz"), ("Y", "zz")], "");
    assert_eq!(ids(&first), [1, 2, 3]);
    drop(first);
    let second = summary(&run(&set, "/p?b=x", &[("Host", "h")], ""));
    let fresh = std::thread::scope(|s| s.spawn(|| summary(&run(&set, "/p?b=x", &[("Host", "h")], ""))).join().unwrap());
    assert_eq!(second, fresh);
    assert_eq!(second, [(4, "TX".to_owned(), String::new())]);
}

/// A chain link that is a pure check (request variables, an operator on the bytes alone) is numbered in the verdict
/// memo and decided through it, as starters are, a count (`&ARGS`) too; links over TX are not. Decisions are the same with the
/// memo off, over requests that repeat values (memo hits) and change them.
#[test]
fn pure_chain_links_are_decided_through_the_memo() {
    let src = r#"SecRuleEngine On
SecRule REQUEST_PROTOCOL "@streq HTTP/1.1" "id:1,phase:2,pass,log,chain"
    SecRule ARGS|ARGS_NAMES "@rx ^evil" "t:lowercase,setvar:tx.hit=+1"
SecRule REQUEST_METHOD "@streq GET" "id:2,phase:2,pass,log,chain"
    SecRule &ARGS "@gt 1" "t:none"
SecRule ARGS:q "@rx ." "id:3,phase:2,pass,log,chain"
    SecRule TX:hit "@eq 1" "t:none"
SecRule REQUEST_METHOD "@streq GET" "id:4,phase:2,pass,log,chain"
    SecRule ARGS "@rx ^x" "chain"
    SecRule REQUEST_FILENAME "@endsWith /a" "t:none"
"#;
    let both = memo_on_and_off(src);
    let on = &both.0;
    let link = |id: u32, depth: usize| {
        let r = on.rules.iter().find(|r| r.id == id).unwrap();
        let mut l = r;
        for _ in 0..depth {
            l = l.chain.as_deref().unwrap();
        }
        l.link_pure
    };
    use crate::compile::NOT_PURE;
    assert_ne!(link(1, 1), NOT_PURE);
    assert!(link(2, 1) != NOT_PURE && link(3, 1) == NOT_PURE);
    assert!(link(4, 1) != NOT_PURE && link(4, 2) != NOT_PURE);
    let uris =
        ["/a?q=hello", "/a?q=EVIL", "/a?q=hello", "/b?q=xy", "/a?q=Evil2&p=1", "/a?evil=1", "/a?q=hello", "/a?q=xy"];
    same_as_memo_off(&both, &uris, 1..=4, |_| ());
}

/// A `multiMatch` rule's operator also sees the raw value and each form on the way, so the bytes it skips values
/// without are those every prefix of its chain needs: `t:cmdLine` deletes backslashes, yet the raw `a\b` matches.
/// `@validateByteRange` skips values with no byte outside its ranges.
#[test]
fn values_are_skipped_only_when_no_form_of_them_can_match() {
    let src = r#"SecRuleEngine On
SecRule ARGS "@rx \x5c" "id:1,phase:2,pass,log,t:none,t:cmdLine,multiMatch"
SecRule ARGS "@rx /\*" "id:2,phase:2,pass,log,t:none,t:urlDecodeUni,t:removeWhitespace,multiMatch"
SecRule ARGS "@validateByteRange 1-255" "id:3,phase:2,pass,log,t:none,t:urlDecodeUni"
"#;
    let on = rs(src);
    let mut off = rs(src);
    off.set_verdict_memo(false);
    let has = |s: &[u64; 4], b: u8| s[usize::from(b >> 6)] >> (b & 63) & 1 == 1;
    let pre = |id: u32| on.rules.iter().find(|r| r.id == id).and_then(|r| r.pre_need).unwrap();
    assert!(has(&pre(1), b'\\') && !has(&pre(1), b'a'));
    assert!(has(&pre(2), b'*') && has(&pre(2), b'%') && !has(&pre(2), b'+') && !has(&pre(2), b'a'));
    assert!(has(&pre(3), 0) && has(&pre(3), b'%') && !has(&pre(3), b'+') && !has(&pre(3), b'a'));
    for (uri, want) in [
        ("/?a=a%5Cb", &[1][..]),
        ("/?a=/*", &[2]),
        ("/?a=%252F%252A", &[2]),
        ("/?a=%252F%2B%252A", &[2]),
        ("/?a=%2500", &[3]),
        ("/?a=abc", &[]),
    ] {
        for _ in 0..2 {
            assert_eq!(ids(&run(&on, uri, &[], "")), want, "{uri}");
            assert_eq!(ids(&run(&off, uri, &[], "")), want, "{uri}, memo off");
        }
    }
}

/// A transformation known to leave a value unchanged is not run again on it by another chain (the per-value bits of
/// the transformation cache), and one that changed it is: chains that apply the same transformations to the raw
/// value at different places give the same results as applied one by one.
#[test]
fn chains_sharing_transformations_in_other_orders_agree() {
    let src = r#"SecRuleEngine On
SecRule ARGS "@streq abc" "id:1,phase:2,pass,log,t:none,t:lowercase"
SecRule ARGS "@streq ABC" "id:2,phase:2,pass,log,t:none,t:urlDecode"
SecRule ARGS "@streq abc" "id:3,phase:2,pass,log,t:none,t:urlDecode,t:lowercase"
SecRule ARGS "@streq ABC" "id:4,phase:2,pass,log,t:none,t:removeNulls,t:urlDecode"
SecRule ARGS "@streq abc" "id:5,phase:2,pass,log,t:none,t:removeNulls,t:lowercase"
SecRule ARGS "@streq abc" "id:6,phase:2,pass,log,t:none,t:trim,t:urlDecode,t:lowercase,multiMatch"
SecRule ARGS "@streq -" "id:7,phase:2,pass,log,t:none,t:urlDecodeUni,t:urlDecode,multiMatch"
SecRule ARGS "@streq A%" "id:8,phase:2,pass,log,t:none,t:compressWhitespace,t:urlDecode"
"#;
    for memo in [true, false] {
        let mut set = rs(src);
        set.set_verdict_memo(memo);
        assert_eq!(ids(&run(&set, "/?a=ABC", &[], "")), [1, 2, 3, 4, 5, 6], "memo {memo}");
        assert_eq!(ids(&run(&set, "/?a=A%2542C", &[], "")), [2, 3, 4, 6], "memo {memo}");
        assert_eq!(ids(&run(&set, "/?a=abc", &[], "")), [1, 3, 5, 6], "memo {memo}");
        // 7's second urlDecode leaves its input ("A%") unchanged, but not the value itself ("%41%25"): 8 still
        // decodes the value.
        assert_eq!(ids(&run(&set, "/?a=%2541%2525", &[], "")), [8], "memo {memo}");
        // 1 finds `t:lowercase` leaves "%41%42%43" unchanged; it still runs on what `t:urlDecode` made of it.
        assert_eq!(ids(&run(&set, "/?a=%2541%2542%2543", &[], "")), [2, 3, 4, 6], "memo {memo}");
    }
}

/// A match the phase-1 snapshot decided, that only records and skips (the CRS's paranoia-level checks), is replayed
/// by the walk without the rule (`Transaction::replay_jump`): the record, MATCHED_VAR and MATCHED_VAR_NAME after it,
/// and where the walk resumes are what evaluating the rule gives, in every phase.
#[test]
fn snapshot_jumps_record_and_skip_as_the_rules_do() {
    let src = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1,setvar:tx.other=2"
SecRule REQUEST_URI "@rx ^/" "id:10,phase:1,pass,nolog,setvar:tx.seen=1"
SecRule TX:LEVEL "@lt 2" "id:2,phase:1,pass,nolog,skipAfter:END-1"
SecRule ARGS "@rx ." "id:3,phase:1,deny"
SecMarker END-1
SecAction "id:4,phase:1,pass,log,msg:'after %{MATCHED_VAR_NAME}=%{MATCHED_VAR}'"
SecRule TX:OTHER "@eq 2" "id:5,phase:2,pass,nolog,skipAfter:END-2"
SecRule ARGS "@rx ." "id:6,phase:2,deny"
SecMarker END-2
SecAction "id:7,phase:2,pass,log,msg:'then %{MATCHED_VAR_NAME}=%{MATCHED_VAR}'"
"#;
    let mut set = rs(src);
    let mut seen = Vec::new();
    for snapshot in [false, true, true] {
        set.set_init_snapshot(snapshot);
        let tx = run(&set, "/?a=b", &[], "");
        let got: Vec<(u32, String)> = tx.matches().iter().map(|m| (m.id, m.msg.clone())).collect();
        seen.push(got);
    }
    let expected = vec![
        (1, String::new()),
        (10, String::new()),
        (2, String::new()),
        (4, "after TX:level=1".to_owned()),
        (5, String::new()),
        (7, "then TX:other=2".to_owned()),
    ];
    assert_eq!(seen, vec![expected.clone(), expected.clone(), expected]);

    // A target removal naming a variable the snapshot's verdicts read turns them off: rule 5 then reads nothing,
    // does not skip, and rule 6 denies.
    let removing = src.replace("setvar:tx.seen=1", "setvar:tx.seen=1,ctl:ruleRemoveTargetById=5;TX:other");
    let mut set = rs(&removing);
    for snapshot in [false, true, true] {
        set.set_init_snapshot(snapshot);
        let tx = run(&set, "/?a=b", &[], "");
        assert_eq!(ids(&tx), [1, 10, 2, 4, 6], "snapshot {snapshot}");
    }
}

/// What the phase walk reads of every rule it reaches stays in a rule's first four cache lines (see `Rule`).
#[test]
fn rule_fields_the_walk_reads_share_the_first_cache_lines() {
    use crate::rule::Rule;
    use std::mem::{align_of, offset_of, size_of};
    assert_eq!(align_of::<Rule>(), 64);
    let hot = [
        offset_of!(Rule, id) + size_of::<u32>(),
        offset_of!(Rule, skip) + size_of::<u32>(),
        offset_of!(Rule, severity) + 2,
        offset_of!(Rule, marker) + size_of::<Option<String>>(),
        offset_of!(Rule, chain) + size_of::<Option<Box<Rule>>>(),
        offset_of!(Rule, skip_after) + size_of::<Option<String>>(),
        offset_of!(Rule, effects) + size_of::<Vec<crate::rule::Effect>>(),
        offset_of!(Rule, disruptive) + size_of::<Option<crate::rule::Disruptive>>(),
        offset_of!(Rule, msg) + size_of::<Option<crate::macros::MacroStr>>(),
        offset_of!(Rule, logdata) + size_of::<Option<crate::macros::MacroStr>>(),
    ];
    assert!(hot.iter().all(|&end| end <= 4 * 64), "{hot:?}");
}

/// DURATION: microseconds since the transaction started, as of the phase that reads it (read from the clock only
/// when a rule reads it): a whole number, not going back between phases.
#[test]
fn duration_is_the_time_since_the_transaction_started() {
    let set = rs(r#"SecRuleEngine On
SecRule DURATION "@ge 0" "id:1,phase:1,pass,log,setvar:tx.d1=%{DURATION}"
SecRule DURATION "@lt 0" "id:2,phase:1,pass,log"
SecRule DURATION "@ge %{tx.d1}" "id:3,phase:2,pass,log,setvar:tx.d2=%{DURATION}"
"#);
    let mut tx = set.transaction("id-1", LOCAL);
    std::thread::sleep(std::time::Duration::from_millis(3));
    tx.process_request_headers(&head("GET", "/", &[]));
    std::thread::sleep(std::time::Duration::from_millis(2));
    tx.process_request_body(b"");
    assert_eq!(ids(&tx), [1, 3]);
    let (d1, d2): (u64, u64) = (tx.var("d1").unwrap().parse().unwrap(), tx.var("d2").unwrap().parse().unwrap());
    assert!(d1 >= 3_000, "{d1}");
    assert!(d2 >= d1 + 2_000, "{d1} {d2}");
}

/// Request-line and header variables as the header phase sets them: REQUEST_FILENAME percent-decoded, cookies
/// from one Cookie header or several, the body processor from a Content-Type in any case.
#[test]
fn header_phase_variables_from_the_request_head() {
    let set = rs(r#"SecRuleEngine On
SecRule REQUEST_FILENAME "@streq /a b/c d" "id:1,phase:1,pass,log"
SecRule REQUEST_BASENAME "@streq c d" "id:2,phase:1,pass,log"
SecRule &REQUEST_COOKIES "@eq 3" "id:3,phase:1,pass,log"
SecRule REQUEST_COOKIES:k "@streq v" "id:4,phase:1,pass,log"
SecRule REQBODY_PROCESSOR "@streq URLENCODED" "id:5,phase:1,pass,log""#);
    let one = run(
        &set,
        "/a%20b/c%20d?x=1",
        &[("Cookie", "a=1; b=2; k=v"), ("Content-Type", "Application/X-WWW-Form-Urlencoded")],
        "",
    );
    assert_eq!(ids(&one), [1, 2, 3, 4, 5]);
    // Dropped before the next starts: that one takes over its buffers (REQUEST_FILENAME's, the cookies').
    drop(one);
    let two = run(&set, "/a%20b/c%20d", &[("Cookie", "a=1"), ("Host", "h"), ("cookie", "b=2; k=v")], "");
    assert_eq!(ids(&two), [1, 2, 3, 4]);
    drop(two);
    let none = run(&set, "/x", &[("Content-Type", "text/plain")], "");
    assert_eq!(ids(&none), Vec::<u32>::new());
}

/// Variables parsed once (`PresetVar`) set what `set_var` sets: the store its collection names (TX without one,
/// case-insensitively), and nothing for a collection that is not a store.
#[test]
fn preset_vars_set_what_set_var_sets() {
    use crate::PresetVar;
    let set = rs(r#"SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.other=1"
SecRule TX:level "@eq 2" "id:2,phase:1,pass,log,msg:'level %{tx.level} %{ip.hits}'"
SecRule IP:hits "@eq 3" "id:3,phase:1,deny""#);
    assert_eq!(PresetVar::new("nope.x", "1"), None);
    assert_eq!(Some(PresetVar::tx("LEVEL", "2")), PresetVar::new("tx.LEVEL", "2"));
    assert_ne!(Some(PresetVar::tx("LEVEL", "2")), PresetVar::new("ip.LEVEL", "2"));
    let vars: Vec<PresetVar> =
        [("LEVEL", "2"), ("IP.hits", "3"), ("nope.x", "1")].iter().filter_map(|(n, v)| PresetVar::new(n, v)).collect();
    assert_eq!(vars.len(), 2);
    let decide = |preset: bool| {
        let mut tx = set.transaction("p", LOCAL);
        if preset {
            tx.set_vars(&vars);
        } else {
            tx.set_var("LEVEL", "2");
            tx.set_var("IP.hits", "3");
            tx.set_var("nope.x", "1");
        }
        let iv = tx.process_request_headers(&head("GET", "/", &[]));
        let msgs: Vec<String> = tx.matches().iter().map(|m| m.msg.clone()).collect();
        (ids(&tx), msgs, iv.map(|i| i.rule_id), tx.var("level"), tx.var("ip.hits"), tx.var("nope.x"))
    };
    let level = |v: &str| Some(v.to_owned());
    let expected = (vec![1, 2, 3], vec![String::new(), "level 2 3".to_owned(), String::new()], Some(3));
    let expected = (expected.0, expected.1, expected.2, level("2"), level("3"), None);
    assert_eq!(decide(false), expected);
    assert_eq!(decide(true), expected);
}

/// Pure rules reading the same variables through the same transformations, which no string rules out, share one
/// regex pass per new value (`PurePlan::rx_sets`): a value none of them matches costs no check of any of them, a
/// value one of them matches costs that one's check, and every decision is the one the rules make alone.
#[test]
fn regex_sets_decide_as_their_rules_do() {
    let src = r#"SecRuleEngine On
SecRule ARGS "@rx ^[a-z]+[0-9]$" "id:1,phase:2,pass,log,t:none,tag:'paranoia-level/1'"
SecRule ARGS "@rx ([0-9]{3})" "id:2,phase:2,pass,log,t:none,capture,setvar:tx.three=%{tx.1},tag:'paranoia-level/1'"
SecRule ARGS "@rx (?i)^x" "id:3,phase:2,pass,log,t:none,tag:'paranoia-level/1'"
SecRule ARGS "@rx [0-9]{4}" "id:4,phase:2,pass,log,t:lowercase,tag:'paranoia-level/1'"
SecRule ARGS "@rx ^[0-9]" "id:5,phase:2,pass,log,t:none,tag:'paranoia-level/2'"
SecRule ARGS "!@rx ^a" "id:6,phase:2,pass,log,t:none,tag:'paranoia-level/1'"
SecRule ARGS "@rx (?i)select" "id:7,phase:2,pass,log,t:none,tag:'paranoia-level/1'"
"#;
    let both = memo_on_and_off(src);
    let on = &both.0;
    // One set: rules 1-3 (4 has other transformations, 5 another paranoia level, 6 is negated, 7 needs "select").
    let id_of = |p: u32| on.rules.iter().zip(&on.pure.of_rule).find(|(_, &q)| q == p).map(|(r, _)| r.id);
    let sets: Vec<Vec<Option<u32>>> =
        on.pure.rx_sets.iter().map(|(_, members)| members.iter().map(|&p| id_of(p)).collect()).collect();
    assert_eq!(sets, [[Some(1), Some(2), Some(3)]]);
    let uris = ["/?q=abc1", "/?q=x123", "/?q=hello", "/?q=X", "/?q=42", "/?q=a", "/?q=abc1&r=9999", "/?q=select1"];
    same_as_memo_off(&both, &uris, 1..=7, |tx| tx.var("tx.three"));
    // New values: rules 4, 5 and 6 are checked on each; rules 1-3 only when the set finds one of them matching.
    let checks = |uri: &str| {
        let before = crate::tx::checks();
        let tx = run(on, uri, &[("Host", "h")], "");
        (crate::tx::checks() - before, ids(&tx))
    };
    assert_eq!(checks("/?q=zzzz"), (3, vec![6]));
    assert_eq!(checks("/?q=zz777"), (4, vec![2, 6]));
    assert_eq!(checks("/?q=zz777"), (0, vec![2, 6]));
}
