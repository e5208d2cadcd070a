// A small client for the sensorlake API: the token lives in sessionStorage only.
"use strict";
const Api = {
  get token() { return sessionStorage.getItem("sensorlake.token"); },
  set token(value) {
    if (value) sessionStorage.setItem("sensorlake.token", value);
    else sessionStorage.removeItem("sensorlake.token");
  },
  async request(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (this.token) headers["Authorization"] = "Bearer " + this.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (e) { data = null; }
    }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.statusText;
      const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      error.status = response.status;
      throw error;
    }
    return data;
  },
  get(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      for (const v of [].concat(value)) if (v !== undefined && v !== null) query.append(key, v);
    }
    const text = query.toString();
    return this.request("GET", text ? path + "?" + text : path);
  },
};
