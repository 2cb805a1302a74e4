//! A small, strict evaluator of the HOT (Heat Orchestration Template) subset
//! ops/openstack/ uses, for offline validation: it checks that every
//! intrinsic function is one Heat 2021-04-16 has and that every
//! `get_param` / `get_resource` / `get_attr` / `get_file` / condition /
//! `depends_on` names something that exists (nested templates included, with
//! the properties a parent passes checked against the nested parameters),
//! and it renders resource properties and outputs for a concrete parameter
//! set the way Heat does — `str_replace`, `list_join`, `repeat`, `if`,
//! `OS::Heat::ResourceGroup` with `%index%` substitution — so the test can
//! write the very cloud-init text a VM would get and run `bgf check-config`
//! on it.
//!
//! Where Heat is lax in ways that make templates order-dependent, this is
//! stricter: a `str_replace` whose result would depend on the replacement
//! order (a key inside another key or inside a value) is an error, and so are
//! `list_join` items that are numbers (Heat rejects those too).
//!
//! Not modelled: resources' runtime attributes other than a port's
//! `mac_address` (synthetic) and `fixed_ips` (as declared), `yaql`,
//! `str_split`, `map_merge`, `digest` (the templates do not use them: using
//! one is reported).

use regex::Regex;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Heat's intrinsic functions for heat_template_version 2021-04-16 (the
/// ones this evaluator implements are a subset).
const HOT_2021_04_16_FUNCTIONS: &[&str] = &[
    "and",
    "contains",
    "digest",
    "equals",
    "filter",
    "get_attr",
    "get_file",
    "get_param",
    "get_resource",
    "if",
    "list_concat",
    "list_concat_unique",
    "list_join",
    "make_url",
    "map_merge",
    "map_replace",
    "not",
    "or",
    "repeat",
    "resource_facade",
    "str_replace",
    "str_replace_strict",
    "str_replace_vstrict",
    "str_split",
    "yaql",
];

const IMPLEMENTED: &[&str] = &[
    "get_param",
    "get_resource",
    "get_attr",
    "get_file",
    "str_replace",
    "list_join",
    "repeat",
    "list_concat",
    "if",
    "equals",
    "not",
    "and",
    "or",
];

const PSEUDO_PARAMS: &[&str] = &["OS::stack_name", "OS::stack_id", "OS::project_id"];

/// Resource types the templates may use, with the attributes `get_attr` may
/// read from them.
fn known_type_attrs(ty: &str) -> Option<&'static [&'static str]> {
    Some(match ty {
        "OS::Neutron::Port" => &["mac_address", "fixed_ips", "name"],
        "OS::Neutron::SecurityGroup" => &["name"],
        "OS::Nova::Server" => &["name", "first_address", "networks"],
        "OS::Nova::ServerGroup" => &["name"],
        "OS::Heat::Value" => &["value"],
        "OS::Heat::ResourceGroup" => &["refs"],
        _ => return None,
    })
}

/// A parsed template file.
#[derive(Clone, Debug)]
pub struct Template {
    pub path: PathBuf,
    pub doc: Value,
}

impl Template {
    pub fn load(path: &Path) -> Result<Template, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let doc: Value = serde_norway::from_str(&text)
            .map_err(|e| format!("{}: not YAML: {e}", path.display()))?;
        Ok(Template {
            path: path.to_path_buf(),
            doc,
        })
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn section(&self, name: &str) -> Map<String, Value> {
        self.doc
            .get(name)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    pub fn parameters(&self) -> Map<String, Value> {
        self.section("parameters")
    }

    pub fn resources(&self) -> Map<String, Value> {
        self.section("resources")
    }

    fn outputs(&self) -> Map<String, Value> {
        self.section("outputs")
    }

    fn conditions(&self) -> Map<String, Value> {
        self.section("conditions")
    }

    fn nested(&self, ty: &str) -> Option<PathBuf> {
        (ty.ends_with(".yaml") || ty.ends_with(".yml")).then(|| self.dir().join(ty))
    }

    fn resource_type(&self, name: &str) -> Option<String> {
        self.resources()
            .get(name)?
            .get("type")?
            .as_str()
            .map(str::to_string)
    }
}

/// If `v` is a one-key map whose key is a HOT function, that call.
fn as_call(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (k, a) = m.iter().next()?;
    HOT_2021_04_16_FUNCTIONS
        .contains(&k.as_str())
        .then_some((k.as_str(), a))
}

// ------------------------------------------------------------------ checks

/// Every problem of a template and the nested templates it uses.
pub fn check(t: &Template) -> Vec<String> {
    let mut errs = Vec::new();
    check_into(t, &mut errs, 0);
    errs
}

fn check_into(t: &Template, errs: &mut Vec<String>, depth: usize) {
    let here = t.path.display().to_string();
    if depth > 4 {
        errs.push(format!("{here}: nested templates deeper than 4"));
        return;
    }
    match t.doc.get("heat_template_version").and_then(Value::as_str) {
        Some("2021-04-16") => {}
        other => errs.push(format!(
            "{here}: heat_template_version {other:?}, expected 2021-04-16"
        )),
    }
    let allowed_top = [
        "heat_template_version",
        "description",
        "parameter_groups",
        "parameters",
        "resources",
        "outputs",
        "conditions",
    ];
    if let Some(m) = t.doc.as_object() {
        for k in m.keys() {
            if !allowed_top.contains(&k.as_str()) {
                errs.push(format!("{here}: unknown top-level section {k}"));
            }
        }
    }
    let params = t.parameters();
    for (n, p) in &params {
        match p.get("type").and_then(Value::as_str) {
            Some("string" | "number" | "comma_delimited_list" | "json" | "boolean") => {}
            other => errs.push(format!("{here}: parameter {n} has type {other:?}")),
        }
    }
    if let Some(groups) = t.doc.get("parameter_groups").and_then(Value::as_array) {
        for g in groups {
            for p in g
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = p.as_str().unwrap_or("");
                if !params.contains_key(name) {
                    errs.push(format!("{here}: parameter_groups names undeclared {name}"));
                }
            }
        }
    }
    let resources = t.resources();
    let conditions = t.conditions();
    for (n, c) in &conditions {
        walk(t, c, &format!("conditions.{n}"), errs);
    }
    for (name, r) in &resources {
        let at = format!("resources.{name}");
        let Some(ty) = r.get("type").and_then(Value::as_str) else {
            errs.push(format!("{here}: {at} has no type"));
            continue;
        };
        for k in r
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or(Vec::new())
        {
            if !["type", "properties", "depends_on", "condition", "metadata"].contains(&k.as_str())
            {
                errs.push(format!("{here}: {at}: unknown key {k}"));
            }
        }
        if let Some(c) = r.get("condition").and_then(Value::as_str) {
            if !conditions.contains_key(c) {
                errs.push(format!("{here}: {at}: undeclared condition {c}"));
            }
        }
        for d in r
            .get("depends_on")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let d = d.as_str().unwrap_or("");
            if !resources.contains_key(d) {
                errs.push(format!("{here}: {at}: depends_on undeclared {d}"));
            }
        }
        let props = r.get("properties").cloned().unwrap_or(Value::Null);
        walk(t, &props, &at, errs);
        check_type(t, ty, &props, &at, errs, depth);
    }
    for (n, o) in t.outputs() {
        walk(t, &o, &format!("outputs.{n}"), errs);
    }
}

fn check_type(
    t: &Template,
    ty: &str,
    props: &Value,
    at: &str,
    errs: &mut Vec<String>,
    depth: usize,
) {
    let here = t.path.display().to_string();
    if ty == "OS::Heat::ResourceGroup" {
        let Some(def) = props.get("resource_def") else {
            errs.push(format!("{here}: {at}: ResourceGroup without resource_def"));
            return;
        };
        let inner = def.get("type").and_then(Value::as_str).unwrap_or("");
        let inner_props = def.get("properties").cloned().unwrap_or(Value::Null);
        check_type(
            t,
            inner,
            &inner_props,
            &format!("{at}.resource_def"),
            errs,
            depth,
        );
        return;
    }
    if known_type_attrs(ty).is_some() {
        return;
    }
    let Some(path) = t.nested(ty) else {
        errs.push(format!(
            "{here}: {at}: resource type {ty} is not one the templates may use"
        ));
        return;
    };
    let nested = match Template::load(&path) {
        Ok(n) => n,
        Err(e) => {
            errs.push(format!("{here}: {at}: nested template: {e}"));
            return;
        }
    };
    let declared = nested.parameters();
    let given: BTreeSet<String> = props
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for g in &given {
        if !declared.contains_key(g) {
            errs.push(format!(
                "{here}: {at}: passes {g}, which {} does not declare",
                path.display()
            ));
        }
    }
    for (n, p) in &declared {
        if p.get("default").is_none() && !given.contains(n) {
            errs.push(format!(
                "{here}: {at}: does not pass {n}, which {} requires",
                path.display()
            ));
        }
    }
    check_into(&nested, errs, depth + 1);
}

/// Check every function call under `v`.
fn walk(t: &Template, v: &Value, at: &str, errs: &mut Vec<String>) {
    let here = t.path.display().to_string();
    if let Some((f, args)) = as_call(v) {
        if !IMPLEMENTED.contains(&f) {
            errs.push(format!(
                "{here}: {at}: {f} is valid HOT but not checked offline — use the functions in IMPLEMENTED"
            ));
        }
        let params = t.parameters();
        let resources = t.resources();
        match f {
            "get_param" => {
                let name = match args {
                    Value::String(s) => Some(s.as_str()),
                    Value::Array(a) => a.first().and_then(Value::as_str),
                    _ => None,
                };
                match name {
                    Some(n) if params.contains_key(n) || PSEUDO_PARAMS.contains(&n) => {}
                    other => errs.push(format!("{here}: {at}: get_param of undeclared {other:?}")),
                }
            }
            "get_resource" => match args.as_str() {
                Some(n) if resources.contains_key(n) => {}
                other => errs.push(format!(
                    "{here}: {at}: get_resource of undeclared {other:?}"
                )),
            },
            "get_attr" => {
                let a = args.as_array().cloned().unwrap_or_default();
                let res = a.first().and_then(Value::as_str).unwrap_or("");
                let attr = a.get(1).and_then(Value::as_str).unwrap_or("");
                match t.resource_type(res) {
                    None => errs.push(format!(
                        "{here}: {at}: get_attr of undeclared resource {res:?}"
                    )),
                    Some(ty) => {
                        if let Err(e) = attr_exists(t, res, &ty, attr) {
                            errs.push(format!("{here}: {at}: {e}"));
                        }
                    }
                }
            }
            "get_file" => match args.as_str() {
                Some(f) if t.dir().join(f).is_file() => {}
                other => errs.push(format!("{here}: {at}: get_file of missing {other:?}")),
            },
            "if" => {
                let c = args.get(0).and_then(Value::as_str).unwrap_or("");
                if !t.conditions().contains_key(c) {
                    errs.push(format!("{here}: {at}: if on undeclared condition {c:?}"));
                }
            }
            "str_replace" if args.get("template").is_none() || args.get("params").is_none() => {
                errs.push(format!(
                    "{here}: {at}: str_replace needs template and params"
                ));
            }
            "repeat" if args.get("template").is_none() || args.get("for_each").is_none() => {
                errs.push(format!("{here}: {at}: repeat needs template and for_each"));
            }
            _ => {}
        }
        walk(t, args, &format!("{at}.{f}"), errs);
        return;
    }
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| walk(t, x, &format!("{at}[{i}]"), errs)),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| walk(t, x, &format!("{at}.{k}"), errs)),
        _ => {}
    }
}

fn attr_exists(t: &Template, res: &str, ty: &str, attr: &str) -> Result<(), String> {
    if let Some(attrs) = known_type_attrs(ty) {
        if ty == "OS::Heat::ResourceGroup" {
            let def_ty = t.resources()[res]["properties"]["resource_def"]["type"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let Some(p) = t.nested(&def_ty) else {
                return Err(format!("get_attr {res}.{attr}: group of {def_ty}"));
            };
            let nested = Template::load(&p)?;
            return if attrs.contains(&attr) || nested.outputs().contains_key(attr) {
                Ok(())
            } else {
                Err(format!(
                    "get_attr {res}.{attr}: {} has no output {attr}",
                    p.display()
                ))
            };
        }
        return if attrs.contains(&attr) {
            Ok(())
        } else {
            Err(format!(
                "get_attr {res}.{attr}: {ty} attribute not modelled or unknown"
            ))
        };
    }
    let p = t
        .nested(ty)
        .ok_or_else(|| format!("get_attr {res}: type {ty}"))?;
    let nested = Template::load(&p)?;
    if nested.outputs().contains_key(attr) {
        Ok(())
    } else {
        Err(format!(
            "get_attr {res}.{attr}: {} has no output {attr}",
            p.display()
        ))
    }
}

// -------------------------------------------------------------- rendering

/// One stack (or nested stack) with concrete parameter values.
pub struct Stack {
    pub tpl: Template,
    pub name: String,
    params: Map<String, Value>,
    conditions: BTreeMap<String, bool>,
}

impl Stack {
    /// Coerce `given` (environment `parameters:` or a parent's properties)
    /// against the template's declarations, with defaults and constraints.
    pub fn new(tpl: Template, name: &str, given: &Map<String, Value>) -> Result<Stack, String> {
        let here = tpl.path.display().to_string();
        let mut params = Map::new();
        for k in given.keys() {
            if !tpl.parameters().contains_key(k) {
                return Err(format!("{here}: value for undeclared parameter {k}"));
            }
        }
        for (n, decl) in tpl.parameters() {
            let raw = match given.get(&n).or_else(|| decl.get("default")) {
                Some(v) => v.clone(),
                None => return Err(format!("{here}: parameter {n} has no value and no default")),
            };
            let ty = decl["type"].as_str().unwrap_or("string");
            let v = coerce(ty, &raw).map_err(|e| format!("{here}: parameter {n}: {e}"))?;
            constraints(&decl, &v).map_err(|e| format!("{here}: parameter {n}: {e}"))?;
            params.insert(n, v);
        }
        let mut s = Stack {
            tpl,
            name: name.to_string(),
            params,
            conditions: BTreeMap::new(),
        };
        for (n, c) in s.tpl.conditions() {
            let v = s.condition(&c)?;
            s.conditions.insert(n, v);
        }
        Ok(s)
    }

    pub fn param(&self, n: &str) -> Option<&Value> {
        self.params.get(n)
    }

    fn condition(&self, c: &Value) -> Result<bool, String> {
        if let Some(b) = c.as_bool() {
            return Ok(b);
        }
        if let Some(n) = c.as_str() {
            return self
                .conditions
                .get(n)
                .copied()
                .ok_or_else(|| format!("condition {n} not (yet) defined"));
        }
        match as_call(c) {
            Some(("equals", a)) => {
                let a = a.as_array().ok_or("equals takes a list")?;
                if a.len() != 2 {
                    return Err("equals takes 2 values".into());
                }
                Ok(loose_eq(&self.resolve(&a[0])?, &self.resolve(&a[1])?))
            }
            Some(("not", a)) => Ok(!self.condition(a)?),
            Some(("and", a)) => {
                for x in a.as_array().ok_or("and takes a list")? {
                    if !self.condition(x)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Some(("or", a)) => {
                for x in a.as_array().ok_or("or takes a list")? {
                    if self.condition(x)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            _ => Err(format!("not a condition: {c}")),
        }
    }

    /// Whether a resource exists in this stack (its condition, if any, holds).
    pub fn enabled(&self, res: &str) -> Result<bool, String> {
        let r = self
            .tpl
            .resources()
            .get(res)
            .cloned()
            .ok_or_else(|| format!("no resource {res}"))?;
        match r.get("condition") {
            None => Ok(true),
            Some(c) => self.condition(c),
        }
    }

    /// Names of the resources that exist, with their types.
    pub fn enabled_resources(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for (n, r) in self.tpl.resources() {
            if self.enabled(&n)? {
                out.push((n, r["type"].as_str().unwrap_or("").to_string()));
            }
        }
        Ok(out)
    }

    /// A resource's properties, every function evaluated.
    pub fn properties(&self, res: &str) -> Result<Value, String> {
        if !self.enabled(res)? {
            return Err(format!("{res} is disabled by its condition"));
        }
        let r = &self.tpl.resources()[res];
        let props = r.get("properties").cloned().unwrap_or(Value::Null);
        if r["type"] == "OS::Heat::ResourceGroup" {
            // resource_def is evaluated per member (members()).
            let mut p = props.as_object().cloned().unwrap_or_default();
            p.remove("resource_def");
            return self.resolve(&Value::Object(p));
        }
        self.resolve(&props)
            .map_err(|e| format!("{}: resources.{res}: {e}", self.tpl.path.display()))
    }

    /// Every output, evaluated.
    pub fn outputs(&self) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        for (n, o) in self.tpl.outputs() {
            let v = self
                .resolve(o.get("value").unwrap_or(&Value::Null))
                .map_err(|e| format!("{}: outputs.{n}: {e}", self.tpl.path.display()))?;
            out.insert(n, v);
        }
        Ok(out)
    }

    /// The member stacks of a ResourceGroup, `%index%` substituted.
    pub fn members(&self, group: &str) -> Result<Vec<Stack>, String> {
        if !self.enabled(group)? {
            return Ok(Vec::new());
        }
        let r = &self.tpl.resources()[group];
        let props = &r["properties"];
        let count = self
            .resolve(&props["count"])?
            .as_u64()
            .ok_or("ResourceGroup count is not a number")?;
        let var = props
            .get("index_var")
            .and_then(Value::as_str)
            .unwrap_or("%index%")
            .to_string();
        let def = &props["resource_def"];
        let ty = def["type"].as_str().unwrap_or("");
        let path = self
            .tpl
            .nested(ty)
            .ok_or_else(|| format!("{group}: member type {ty} is not a template"))?;
        let given = self.resolve(def.get("properties").unwrap_or(&Value::Null))?;
        let mut out = Vec::new();
        for i in 0..count {
            let g = replace_in(&given, &var, &i.to_string());
            let g = g.as_object().cloned().unwrap_or_default();
            out.push(Stack::new(
                Template::load(&path)?,
                &format!("{}.{group}[{i}]", self.name),
                &g,
            )?);
        }
        Ok(out)
    }

    fn resolve(&self, v: &Value) -> Result<Value, String> {
        if let Some((f, a)) = as_call(v) {
            return self.call(f, a);
        }
        Ok(match v {
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => {
                let mut o = Map::new();
                for (k, x) in m {
                    o.insert(k.clone(), self.resolve(x)?);
                }
                Value::Object(o)
            }
            other => other.clone(),
        })
    }

    fn call(&self, f: &str, a: &Value) -> Result<Value, String> {
        match f {
            "get_param" => {
                let (name, path) = match a {
                    Value::String(s) => (s.clone(), Vec::new()),
                    Value::Array(x) if !x.is_empty() => (
                        x[0].as_str().ok_or("get_param name")?.to_string(),
                        x[1..]
                            .iter()
                            .map(|p| self.resolve(p))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(format!("get_param {a}")),
                };
                let root = match name.as_str() {
                    "OS::stack_name" => Value::String(self.name.clone()),
                    "OS::stack_id" | "OS::project_id" => Value::String(format!("{}-id", self.name)),
                    n => self
                        .params
                        .get(n)
                        .cloned()
                        .ok_or_else(|| format!("get_param of undeclared {n}"))?,
                };
                let mut cur = root;
                for p in path {
                    cur = step(&cur, &p).ok_or_else(|| {
                        format!("get_param {name}: path {p} not in {cur} (Heat would give \"\")")
                    })?;
                }
                Ok(cur)
            }
            "get_resource" => {
                let n = a.as_str().ok_or("get_resource takes a name")?;
                if !self.enabled(n)? {
                    return Err(format!("get_resource of {n}, disabled by its condition"));
                }
                Ok(Value::String(format!("{}/{n}", self.name)))
            }
            "get_attr" => {
                let x = a.as_array().ok_or("get_attr takes a list")?;
                let res = x
                    .first()
                    .and_then(Value::as_str)
                    .ok_or("get_attr resource")?;
                let attr = x
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or("get_attr attribute")?;
                let mut cur = self.attr(res, attr)?;
                for p in &x[2..] {
                    let p = self.resolve(p)?;
                    cur =
                        step(&cur, &p).ok_or_else(|| format!("get_attr {res}.{attr}: path {p}"))?;
                }
                Ok(cur)
            }
            "get_file" => {
                let f = a.as_str().ok_or("get_file takes a path")?;
                let p = self.tpl.dir().join(f);
                std::fs::read_to_string(&p)
                    .map(Value::String)
                    .map_err(|e| format!("get_file {}: {e}", p.display()))
            }
            "str_replace" => {
                let template = self.resolve(&a["template"])?;
                let template = template
                    .as_str()
                    .ok_or_else(|| format!("str_replace template is not a string: {template}"))?
                    .to_string();
                let params = self.resolve(&a["params"])?;
                let params = params
                    .as_object()
                    .ok_or("str_replace params is not a map")?;
                let mut pairs = Vec::new();
                for (k, v) in params {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => {
                            return Err(format!(
                            "str_replace param {k} is {other}: Heat takes strings and numbers only"
                        ))
                        }
                    };
                    pairs.push((k.clone(), v));
                }
                for (k, _) in &pairs {
                    for (k2, v2) in &pairs {
                        if k != k2 && k2.contains(k.as_str()) {
                            return Err(format!("str_replace keys {k} and {k2} overlap: the result depends on the order"));
                        }
                        if v2.contains(k.as_str()) {
                            return Err(format!("str_replace value of {k2} contains the key {k}: the result depends on the order"));
                        }
                    }
                }
                let mut out = template;
                for (k, v) in &pairs {
                    out = out.replace(k.as_str(), v);
                }
                Ok(Value::String(out))
            }
            "list_join" => {
                let x = a.as_array().ok_or("list_join takes a list")?;
                let delim = x
                    .first()
                    .and_then(Value::as_str)
                    .ok_or("list_join delimiter")?;
                let mut items = Vec::new();
                for l in &x[1..] {
                    let l = self.resolve(l)?;
                    let l = l
                        .as_array()
                        .ok_or_else(|| format!("list_join of a non-list {l}"))?;
                    for i in l {
                        items.push(match i {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            Value::Array(_) | Value::Object(_) => i.to_string(),
                            other => {
                                return Err(format!(
                                    "list_join item {other}: Heat joins strings (and maps/lists as JSON) only"
                                ))
                            }
                        });
                    }
                }
                Ok(Value::String(items.join(delim)))
            }
            "list_concat" => {
                let x = a.as_array().ok_or("list_concat takes a list")?;
                let mut out = Vec::new();
                for l in x {
                    let l = self.resolve(l)?;
                    out.extend(
                        l.as_array()
                            .ok_or("list_concat of a non-list")?
                            .iter()
                            .cloned(),
                    );
                }
                Ok(Value::Array(out))
            }
            "repeat" => {
                let for_each = self.resolve(&a["for_each"])?;
                let fe = for_each.as_object().ok_or("repeat for_each is not a map")?;
                if fe.len() != 1 {
                    return Err("repeat: only one for_each key is modelled".into());
                }
                let (key, list) = fe.iter().next().ok_or("repeat: empty for_each")?;
                let list = list
                    .as_array()
                    .ok_or("repeat for_each value is not a list")?;
                let template = self.resolve(&a["template"])?;
                let mut out = Vec::new();
                for item in list {
                    let s = item
                        .as_str()
                        .ok_or_else(|| format!("repeat item {item} is not a string"))?;
                    out.push(replace_in(&template, key, s));
                }
                Ok(Value::Array(out))
            }
            "if" => {
                let x = a.as_array().ok_or("if takes a list")?;
                if x.len() != 3 {
                    return Err("if takes [condition, then, else]".into());
                }
                if self.condition(&x[0])? {
                    self.resolve(&x[1])
                } else {
                    self.resolve(&x[2])
                }
            }
            other => Err(format!("{other}: not modelled in property values")),
        }
    }

    fn attr(&self, res: &str, attr: &str) -> Result<Value, String> {
        if !self.enabled(res)? {
            return Ok(Value::Null);
        }
        let ty = self
            .tpl
            .resource_type(res)
            .ok_or_else(|| format!("get_attr of undeclared {res}"))?;
        match (ty.as_str(), attr) {
            ("OS::Neutron::Port", "mac_address") => Ok(Value::String(synthetic_mac(&format!(
                "{}/{res}",
                self.name
            )))),
            ("OS::Neutron::Port", "fixed_ips") => {
                let p = self.properties(res)?;
                Ok(p.get("fixed_ips")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new())))
            }
            ("OS::Heat::Value", "value") => Ok(self.properties(res)?["value"].clone()),
            ("OS::Heat::ResourceGroup", out) => {
                let mut v = Vec::new();
                for m in self.members(res)? {
                    let o = m.outputs()?;
                    v.push(
                        o.get(out)
                            .cloned()
                            .ok_or_else(|| format!("{res} members have no output {out}"))?,
                    );
                }
                Ok(Value::Array(v))
            }
            (t, a) => Err(format!("get_attr {res}.{a}: {t} attribute not modelled")),
        }
    }
}

/// MAC in Neutron's fa:16:3e OUI, stable per resource path.
pub fn synthetic_mac(key: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(16777619);
    }
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        (h >> 16) & 0xff,
        (h >> 8) & 0xff,
        h & 0xff
    )
}

fn step(cur: &Value, key: &Value) -> Option<Value> {
    match (cur, key) {
        (Value::Object(m), Value::String(k)) => m.get(k).cloned(),
        (Value::Array(a), Value::Number(n)) => a.get(n.as_u64()? as usize).cloned(),
        // Heat turns a numeric string into a list index too.
        (Value::Array(a), Value::String(s)) => a.get(s.parse::<usize>().ok()?).cloned(),
        _ => None,
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::String(y)) | (Value::String(y), Value::Number(x)) => {
            x.to_string() == *y
        }
        _ => a == b,
    }
}

/// Replace `key` in every string (map keys too) under `v`.
fn replace_in(v: &Value, key: &str, with: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(key, with)),
        Value::Array(a) => Value::Array(a.iter().map(|x| replace_in(x, key, with)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.replace(key, with), replace_in(x, key, with)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn coerce(ty: &str, v: &Value) -> Result<Value, String> {
    match (ty, v) {
        ("string", Value::String(_)) => Ok(v.clone()),
        ("string", Value::Number(n)) => Ok(Value::String(n.to_string())),
        ("number", Value::Number(_)) => Ok(v.clone()),
        ("number", Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{s:?} is not a number")),
        ("comma_delimited_list", Value::String(s)) => Ok(Value::Array(if s.trim().is_empty() {
            Vec::new()
        } else {
            s.split(',')
                .map(|x| Value::String(x.trim().to_string()))
                .collect()
        })),
        ("comma_delimited_list", Value::Array(a)) => Ok(Value::Array(
            a.iter()
                .map(|x| match x {
                    Value::String(_) => x.clone(),
                    other => Value::String(other.to_string()),
                })
                .collect(),
        )),
        ("json", _) | ("boolean", Value::Bool(_)) => Ok(v.clone()),
        (t, v) => Err(format!("{v} is not a {t}")),
    }
}

fn constraints(decl: &Value, v: &Value) -> Result<(), String> {
    for c in decl
        .get("constraints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(allowed) = c.get("allowed_values").and_then(Value::as_array) {
            if !allowed.iter().any(|a| loose_eq(a, v)) {
                return Err(format!("{v} not in allowed_values {allowed:?}"));
            }
        }
        if let Some(r) = c.get("range") {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("{v}: range on a non-number"))?;
            if r.get("min").and_then(Value::as_f64).is_some_and(|m| x < m)
                || r.get("max").and_then(Value::as_f64).is_some_and(|m| x > m)
            {
                return Err(format!("{v} out of range {r}"));
            }
        }
        if let Some(p) = c.get("allowed_pattern").and_then(Value::as_str) {
            // Heat anchors the pattern at both ends.
            let re = Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("pattern {p}: {e}"))?;
            let s = v.as_str().ok_or("allowed_pattern on a non-string")?;
            if !re.is_match(s) {
                return Err(format!("value does not match allowed_pattern {p}"));
            }
        }
    }
    Ok(())
}
