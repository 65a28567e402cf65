//! Small bindings and helpers around the JavaScript host.

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsValue;

    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;

    #[wasm_bindgen(js_name = fetch)]
    fn fetch(url: &str) -> Promise;
}

/// Milliseconds on the page's monotonic clock.
pub fn now() -> f64 {
    performance_now()
}

/// Same, as the whole milliseconds `meshcast_proto::balance` counts in.
pub fn now_ms() -> u64 {
    now().max(0.0) as u64
}

/// Resolves after `ms` milliseconds (works in windows and workers).
pub async fn sleep(ms: f64) {
    let ms = ms.clamp(0.0, f64::from(i32::MAX)) as i32;
    let promise = Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    let _ = JsFuture::from(promise).await;
}

/// GETs `url` and parses the body as JSON.
pub async fn fetch_json(url: &str) -> Result<JsValue, String> {
    let response: web_sys::Response = JsFuture::from(fetch(url))
        .await
        .map_err(|e| describe(&e))?
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_string())?;
    if !response.ok() {
        return Err(format!("HTTP {} from {url}", response.status()));
    }
    let json = response.json().map_err(|e| describe(&e))?;
    JsFuture::from(json).await.map_err(|e| describe(&e))
}

/// A plain object from key/value pairs.
pub fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let obj = Object::new();
    for (key, value) in pairs {
        let _ = Reflect::set(&obj, &JsValue::from_str(key), value);
    }
    obj.into()
}

/// A property of an options object, `None` when absent, null or undefined.
pub fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

pub fn get_string(obj: &JsValue, key: &str) -> Option<String> {
    get(obj, key).and_then(|v| v.as_string())
}

pub fn get_f64(obj: &JsValue, key: &str) -> Option<f64> {
    get(obj, key).and_then(|v| v.as_f64())
}

/// A JavaScript `Error` whose `code` property says what failed (the loader
/// decides on `code`, people read `message`).
pub fn error(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &JsValue::from_str("code"), &JsValue::from_str(code));
    err.into()
}

/// The message of a thrown JavaScript value.
pub fn describe(value: &JsValue) -> String {
    if let Some(err) = value.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}
