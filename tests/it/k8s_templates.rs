//! The Kubernetes variants and the Helm values: the user-namespace patch applied over
//! deployment.yaml (a strategic merge done here, as kustomize would: kustomize is not a test
//! dependency), the Pod Security level docs/kubernetes.md claims for each variant, and
//! templates/helm/values.prebake.yaml against the community chart's own values
//! (tests/fixtures/dify-helm/values.yaml) and against deployment.yaml.

use crate::support;
use std::fs;
use std::path::Path;
use std::process::Command;

use prebake::contract::{SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
use prebake::oci;
use serde_json::{json, Map, Value};

fn read_yaml(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn k8s(name: &str) -> Value {
    read_yaml(&support::repo_root().join("templates/k8s").join(name))
}

fn helm_values() -> Value {
    read_yaml(&support::repo_root().join("templates/helm/values.prebake.yaml"))
}

fn chart_values() -> Value {
    read_yaml(&support::repo_root().join("tests/fixtures/dify-helm/values.yaml"))
}

/// The merge key of a list in a Deployment, as the API's strategic-merge-patch metadata has
/// it; lists without one (capabilities, args) are replaced whole.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "volumes" | "env" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// A strategic merge patch of `patch` onto `base`: maps merge, `null` deletes a key, lists
/// with a merge key merge element by element, other lists and scalars are replaced.
fn strategic_merge(base: &mut Value, patch: &Value) {
    let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) else {
        *base = patch.clone();
        return;
    };
    for (k, pv) in p {
        if pv.is_null() {
            b.remove(k);
            continue;
        }
        match (b.get_mut(k), merge_key(k)) {
            (Some(Value::Array(items)), Some(key)) => {
                for pitem in pv.as_array().unwrap() {
                    match items.iter_mut().find(|i| i[key] == pitem[key]) {
                        Some(item) => strategic_merge(item, pitem),
                        None => items.push(pitem.clone()),
                    }
                }
            }
            (Some(bv), _) if bv.is_object() && pv.is_object() => strategic_merge(bv, pv),
            _ => {
                b.insert(k.clone(), pv.clone());
            }
        }
    }
}

/// deployment.yaml with the named patches of templates/k8s applied in order.
fn deployment_with(patches: &[&str]) -> Value {
    let mut d = k8s("deployment.yaml");
    for p in patches {
        let patch = k8s(p);
        assert_eq!(patch["kind"], d["kind"], "{p}");
        assert_eq!(patch["metadata"]["name"], d["metadata"]["name"], "{p}");
        strategic_merge(&mut d, &patch);
    }
    d
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn strategic_merge_follows_the_merge_keys() {
    let _exclusive = support::exclusive();
    let mut base = json!({
        "c": [{"name": "a", "x": 1, "caps": ["A", "B"]}],
        "v": [{"name": "keep"}],
        "m": {"gone": 1, "kept": 2},
    });
    let patch = json!({
        "c": [{"name": "a", "caps": ["C"]}, {"name": "b"}],
        "v": [{"name": "other"}],
        "m": {"gone": null},
    });
    // "c" and "v" have no merge key under these names: replaced whole.
    strategic_merge(&mut base, &patch);
    assert_eq!(base["c"], patch["c"]);
    assert_eq!(base["m"], json!({"kept": 2}));
    let mut pod = json!({"containers": [{"name": "a", "x": 1, "caps": ["A", "B"]}],
                         "volumes": [{"name": "keep", "hostPath": {"path": "/p"}}]});
    strategic_merge(
        &mut pod,
        &json!({"containers": [{"name": "a", "caps": ["C"]}],
                "volumes": [{"name": "keep", "hostPath": null, "emptyDir": {}}, {"name": "new"}]}),
    );
    assert_eq!(
        pod,
        json!({"containers": [{"name": "a", "x": 1, "caps": ["C"]}],
               "volumes": [{"name": "keep", "emptyDir": {}}, {"name": "new"}]})
    );
}

/// The user-namespace variant: the pod opts into a user namespace, keeps namespaces mode, and
/// its uid-pool locks move from the node's hostPath to a pod-local directory; and the patch
/// names the kubelet id count the sandbox uids need.
#[test]
fn user_namespace_patch_confines_the_pod_and_drops_the_hostpath() {
    let _exclusive = support::exclusive();
    let base = deployment_with(&[]);
    let d = deployment_with(&["user-namespace.patch.yaml"]);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["hostUsers"], false);
    // A pod with hostUsers: false may not share the node's network, pid or ipc namespaces.
    for host_ns in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host_ns], true, "{host_ns}");
    }
    let c = &pod["containers"][0];
    assert_eq!(
        c, &base["spec"]["template"]["spec"]["containers"][0],
        "the patch changes the pod, not the container"
    );
    assert!(strs(&c["securityContext"]["capabilities"]["add"]).contains(&"SYS_ADMIN"));
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.len(),
        base["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .len()
    );
    assert!(
        volumes.iter().all(|v| v.get("hostPath").is_none()),
        "{volumes:?}"
    );
    // The runtime still finds a writable lock directory where it looks.
    let lock_dir = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SANDBOX_UID_LOCK_DIR")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == lock_dir)
        .unwrap();
    let vol = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert!(vol["emptyDir"].is_object(), "{vol}");

    // The kubelet maps 65536 ids into a pod unless idsPerPod says more (a multiple of 65536);
    // the sandbox uids must fit.
    let highest = u64::from(SANDBOX_UID_BASE + SANDBOX_UID_COUNT - 1);
    assert!(
        highest >= 65536,
        "the default mapping would do: drop the note"
    );
    let ids_per_pod = (highest / 65536 + 1) * 65536;
    let text =
        fs::read_to_string(support::repo_root().join("templates/k8s/user-namespace.patch.yaml"))
            .unwrap();
    assert!(
        text.contains(&format!("idsPerPod` >= {ids_per_pod}")),
        "the patch must name idsPerPod >= {ids_per_pod}"
    );
    let kustomization =
        fs::read_to_string(support::repo_root().join("templates/k8s/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("user-namespace.patch.yaml"));
}

/// The merged user-namespace Deployment (alone and with reduced isolation) validates strictly
/// for 1.33, where pod user namespaces are on by default, and for the newest schema
/// kubernetes-validate has; 1.29 rejects it (deployment.yaml's appArmorProfile, 1.30); and a
/// misspelled `hostUsers` fails, which shows the strict check reads the patched field.
#[test]
#[cfg_attr(
    not(have_kubernetes_validate),
    ignore = "needs kubernetes-validate (the validators' venv of .ci/run)"
)]
fn user_namespace_patch_validates_for_the_versions_it_claims() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &Value| {
        let p = tmp.path().join(name);
        fs::write(&p, serde_yaml_ng::to_string(v).unwrap()).unwrap();
        p
    };
    let validate = |version: &str, file: &Path| {
        let o = Command::new(support::validators_venv().join("bin/kubernetes-validate"))
            .args(["--strict", "-k", version])
            .arg(file)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        (o.status.success() && text.contains(" passed "), text)
    };
    let userns = write(
        "userns.yaml",
        &deployment_with(&["user-namespace.patch.yaml"]),
    );
    let both = write(
        "both.yaml",
        &deployment_with(&["reduced-isolation.patch.yaml", "user-namespace.patch.yaml"]),
    );
    for version in ["1.33", "1.37"] {
        for file in [&userns, &both] {
            let (ok, text) = validate(version, file);
            assert!(ok, "{version} {}:\n{text}", file.display());
        }
    }
    let (ok, _) = validate("1.29", &userns);
    assert!(!ok, "1.29 accepted the 1.30 fields");

    let mut typo = deployment_with(&["user-namespace.patch.yaml"]);
    let pod = typo["spec"]["template"]["spec"].as_object_mut().unwrap();
    let v = pod.remove("hostUsers").unwrap();
    pod.insert("hostUser".into(), v);
    let (ok, text) = validate("1.37", &write("typo.yaml", &typo));
    assert!(!ok, "a misspelled hostUsers passed:\n{text}");
}

// --- Pod Security Standards ---------------------------------------------------------------

/// The capabilities the baseline level lets a container add (Docker's defaults without
/// NET_RAW): kubernetes/kubernetes staging/src/k8s.io/pod-security-admission/policy/
/// check_capabilities_baseline.go.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The volume types the restricted level allows (check_restrictedVolumes.go).
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Why `pod` fails the baseline and the restricted level of the Pod Security Standards, as
/// Pod Security admission checks them at policy version 1.35 and later: for a pod with
/// hostUsers: false it skips runAsNonRoot, runAsUser and procMount, nothing else. A model of every baseline
/// check and of the restricted checks these pods meet, so that the table in
/// docs/kubernetes.md is computed rather than asserted.
fn pss_violations(pod: &Value) -> (Vec<String>, Vec<String>) {
    let userns = pod["hostUsers"] == false;
    let (mut baseline, mut restricted) = (Vec::new(), Vec::new());
    let containers: Vec<&Value> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect();
    let contexts = || {
        std::iter::once(&pod["securityContext"])
            .chain(containers.iter().map(|c| &c["securityContext"]))
    };
    // Baseline.
    for host_ns in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host_ns] == true {
            baseline.push(host_ns.to_string());
        }
    }
    for c in &containers {
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            baseline.push("privileged".into());
        }
        for cap in strs(&sc["capabilities"]["add"]) {
            if !BASELINE_CAPS.contains(&cap) {
                baseline.push(format!("capability {cap}"));
            }
        }
        if c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["hostPort"].as_u64().unwrap_or(0) != 0)
        {
            baseline.push("hostPort".into());
        }
        if !userns && !sc["procMount"].is_null() && sc["procMount"] != "Default" {
            baseline.push("procMount".into());
        }
        if sc["windowsOptions"]["hostProcess"] == true {
            baseline.push("hostProcess".into());
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            for handler in ["httpGet", "tcpSocket"] {
                if !c[probe][handler]["host"].is_null() {
                    baseline.push(format!("{probe} host"));
                }
            }
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        if !v["hostPath"].is_null() {
            baseline.push(format!("hostPath volume {}", v["name"]));
        }
        let kind = v.as_object().unwrap().keys().find(|k| *k != "name");
        if let Some(kind) = kind {
            if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
                restricted.push(format!("{kind} volume {}", v["name"]));
            }
        }
    }
    if pod["securityContext"]["sysctls"]
        .as_array()
        .is_some_and(|s| !s.is_empty())
    {
        baseline.push("sysctls (not modelled: any counts)".into());
    }
    for sc in contexts() {
        let apparmor = &sc["appArmorProfile"]["type"];
        if !apparmor.is_null() && apparmor != "RuntimeDefault" && apparmor != "Localhost" {
            baseline.push(format!("AppArmor {apparmor}"));
        }
        if sc["seccompProfile"]["type"] == "Unconfined" {
            baseline.push("seccomp Unconfined".into());
        }
        let se = &sc["seLinuxOptions"];
        if !se["user"].is_null() || !se["role"].is_null() {
            baseline.push("seLinuxOptions user/role".into());
        }
        let t = &se["type"];
        if !t.is_null()
            && !["", "container_t", "container_init_t", "container_kvm_t"]
                .contains(&t.as_str().unwrap_or("?"))
        {
            baseline.push(format!("seLinux type {t}"));
        }
    }
    // Restricted, beyond baseline.
    let pod_sc = &pod["securityContext"];
    for c in &containers {
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            restricted.push("allowPrivilegeEscalation not false".into());
        }
        if !strs(&sc["capabilities"]["drop"]).contains(&"ALL") {
            restricted.push("capabilities not dropping ALL".into());
        }
        for cap in strs(&sc["capabilities"]["add"]) {
            if cap != "NET_BIND_SERVICE" {
                restricted.push(format!("capability {cap}"));
            }
        }
        let seccomp = if sc["seccompProfile"]["type"].is_null() {
            &pod_sc["seccompProfile"]["type"]
        } else {
            &sc["seccompProfile"]["type"]
        };
        if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
            restricted.push("no RuntimeDefault/Localhost seccomp profile".into());
        }
        if !userns {
            let non_root = if sc["runAsNonRoot"].is_null() {
                &pod_sc["runAsNonRoot"]
            } else {
                &sc["runAsNonRoot"]
            };
            if non_root != true {
                restricted.push("runAsNonRoot not true".into());
            }
            if sc["runAsUser"] == 0 || pod_sc["runAsUser"] == 0 {
                restricted.push("runAsUser 0".into());
            }
        }
    }
    restricted.extend(baseline.iter().cloned());
    (baseline, restricted)
}

fn pss_level(pod: &Value) -> &'static str {
    match pss_violations(pod) {
        (_, r) if r.is_empty() => "restricted",
        (b, _) if b.is_empty() => "baseline",
        _ => "privileged",
    }
}

/// The Pod Security level of each variant, computed with the model above, is the one
/// docs/kubernetes.md gives; none reaches `restricted`, and the model does catch what it
/// should (a pod with nothing but a plain container is restricted).
#[test]
fn pod_security_levels_of_the_variants_match_the_docs() {
    let _exclusive = support::exclusive();
    let plain = json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "t", "emptyDir": {}}],
    });
    assert_eq!(
        pss_level(&plain),
        "restricted",
        "{:?}",
        pss_violations(&plain)
    );
    let mut root = plain.clone();
    root["containers"][0]["securityContext"]["runAsUser"] = json!(0);
    assert_eq!(pss_level(&root), "baseline");
    root["hostUsers"] = json!(false);
    assert_eq!(
        pss_level(&root),
        "restricted",
        "relaxed for user namespaces"
    );

    let docs = fs::read_to_string(support::repo_root().join("docs/kubernetes.md")).unwrap();
    let variants: [(&str, &[&str], &str); 4] = [
        ("deployment.yaml", &[], "privileged"),
        (
            "reduced-isolation.patch.yaml",
            &["reduced-isolation.patch.yaml"],
            "privileged",
        ),
        (
            "user-namespace.patch.yaml",
            &["user-namespace.patch.yaml"],
            "privileged",
        ),
        (
            "reduced-isolation.patch.yaml + user-namespace.patch.yaml",
            &["reduced-isolation.patch.yaml", "user-namespace.patch.yaml"],
            "baseline",
        ),
    ];
    for (name, patches, level) in variants {
        let d = deployment_with(patches);
        // The model reads the pod spec; the older AppArmor and seccomp annotations (which
        // it does not read) are not used.
        assert!(d["spec"]["template"]["metadata"]["annotations"].is_null());
        let pod = &d["spec"]["template"]["spec"];
        let (baseline, restricted) = pss_violations(pod);
        assert_eq!(
            pss_level(pod),
            level,
            "{name}: baseline {baseline:?}, restricted {restricted:?}"
        );
        let row = format!("| `{name}` | **{level}** |");
        let row = row.replace(" + ", "` + `");
        assert!(
            docs.lines().any(|l| l.starts_with(&row)),
            "docs/kubernetes.md has no row starting {row}"
        );
    }
}

// --- Helm values for BorisPolonsky/dify-helm -------------------------------------------

/// Where `ours` uses a key the chart's values do not have, or gives a value of another shape
/// than the chart's (a map for a list, a string for a number). A key whose chart value is an
/// empty map is free-form (resources, securityContexts, custom probes): it is not descended.
fn unknown_keys(ours: &Value, chart: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = ours.as_object() else { return };
    let empty = Map::new();
    let theirs = chart.as_object().unwrap_or(&empty);
    for (k, v) in map {
        let p = format!("{path}{k}");
        let Some(cv) = theirs.get(k) else {
            out.push(format!("{p}: not a key of the chart"));
            continue;
        };
        let shape = |v: &Value| match v {
            Value::Object(_) => "map",
            Value::Array(_) => "list",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "bool",
            Value::Null => "null",
        };
        if !cv.is_null() && shape(cv) != shape(v) {
            out.push(format!(
                "{p}: a {} where the chart has a {}",
                shape(v),
                shape(cv)
            ));
        } else if cv.as_object().is_some_and(|m| !m.is_empty()) {
            unknown_keys(v, cv, &format!("{p}."), out);
        }
    }
}

/// Every key of values.prebake.yaml is one of the chart's, with the chart's shape: a typo or
/// a key the chart renamed would otherwise be ignored by helm without a word.
#[test]
fn helm_values_use_only_the_charts_keys() {
    let _exclusive = support::exclusive();
    let chart = chart_values();
    let ours = helm_values();
    let mut bad = Vec::new();
    unknown_keys(&ours, &chart, "", &mut bad);
    assert!(bad.is_empty(), "{bad:#?}");
    // Only the sandbox's own settings.
    let top: Vec<&String> = ours.as_object().unwrap().keys().collect();
    assert_eq!(top, ["image", "sandbox"]);
    assert_eq!(
        ours["image"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["sandbox"]
    );

    // The check bites: a misspelled key, a renamed one and a wrong shape are each reported.
    for (path, value) in [
        ("sandbox.containerSecurityContex", json!({})),
        ("sandbox.auth.key", json!("x")),
        ("sandbox.extraEnv", json!({"A": "1"})),
        ("image.sandbox.digest", json!("sha256:0")),
    ] {
        let mut v = ours.clone();
        let mut at = &mut v;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            at = &mut at[*p];
        }
        at[parts[parts.len() - 1]] = value;
        let mut bad = Vec::new();
        unknown_keys(&v, &chart, "", &mut bad);
        assert!(
            bad.iter().any(|b| b.starts_with(path)),
            "{path} not reported: {bad:?}"
        );
    }
}

/// values.prebake.yaml gives the chart's sandbox what deployment.yaml gives its container:
/// the same security context (capabilities, AppArmor, root), resources, volumes and mounts,
/// probes on /readyz and /livez at the chart's port name, and the same environment but for
/// what the chart sets itself (SANDBOX_PORT, API_KEY, the proxies); the chart's port is the
/// image's; and the key is never dify-sandbox's public default.
#[test]
fn helm_values_carry_what_the_runtime_needs() {
    let _exclusive = support::exclusive();
    let chart = chart_values();
    let v = helm_values();
    let s = &v["sandbox"];
    let deploy = k8s("deployment.yaml");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    let image = c["image"].as_str().unwrap();
    let (repo, tag) = image.rsplit_once(':').unwrap();
    assert_eq!(v["image"]["sandbox"]["repository"], repo);
    assert_eq!(v["image"]["sandbox"]["tag"], tag);
    // The chart's container port is 8194 (fixed in its template) and its Service port is this
    // value, which we keep.
    assert_eq!(
        chart["sandbox"]["service"]["port"],
        u64::from(oci::IMAGE_PORT)
    );
    assert!(s.get("service").is_none(), "the chart's port stays");

    assert_eq!(s["containerSecurityContext"], c["securityContext"]);
    assert_eq!(s["podSecurityContext"], pod["securityContext"]);
    assert_eq!(s["resources"], c["resources"]);
    assert_eq!(s["extraVolumes"], pod["volumes"]);
    assert_eq!(s["extraVolumeMounts"], c["volumeMounts"]);
    assert_eq!(s["updateStrategy"], deploy["spec"]["strategy"]);
    let caps = strs(&s["containerSecurityContext"]["capabilities"]["add"]);
    for needed in ["SYS_ADMIN", "SYS_CHROOT", "SETUID", "SETGID", "KILL"] {
        assert!(caps.contains(&needed), "missing {needed}");
    }

    // Probes: deployment.yaml's, with the chart's port name.
    for (ours, theirs, path) in [
        ("customStartupProbe", "startupProbe", "/readyz"),
        ("customReadinessProbe", "readinessProbe", "/readyz"),
        ("customLivenessProbe", "livenessProbe", "/livez"),
    ] {
        let mut expected = c[theirs].clone();
        expected["httpGet"]["port"] = json!("sandbox");
        assert_eq!(s[ours], expected, "{ours}");
        assert_eq!(s[ours]["httpGet"]["path"], path, "{ours}");
    }

    // Environment: extraEnv replaces the chart's list, so it must carry the chart's own entry.
    let set_by_chart = ["SANDBOX_PORT", "API_KEY", "HTTP_PROXY", "HTTPS_PROXY"];
    let expected: Vec<&Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !set_by_chart.contains(&e["name"].as_str().unwrap()))
        .collect();
    let ours: Vec<&Value> = s["extraEnv"].as_array().unwrap().iter().collect();
    assert_eq!(ours, expected);
    for e in chart["sandbox"]["extraEnv"].as_array().unwrap() {
        assert!(
            ours.iter().any(|o| o["name"] == e["name"]),
            "the chart's {} would be lost",
            e["name"]
        );
    }

    // The key: from the chart's Secret (API_KEY), never in plain env, never the default.
    assert!(ours.iter().all(|e| e["name"] != "API_KEY"));
    assert_eq!(s["auth"]["apiKey"], "");
    assert_eq!(chart["sandbox"]["auth"]["apiKey"], "dify-sandbox");
    assert_eq!(s["serviceAccount"]["automountServiceAccountToken"], false);
    assert_eq!(s["serviceAccount"]["create"], true);
    assert_eq!(s["autoscaling"]["enabled"], true);
}
