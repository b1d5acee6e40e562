// The console's entry point: sign-in state, the header, and hash routes to one view each
// (#/user[/ID], #/grants, #/events, #/schema, #/queues).

import { api, clearToken, onUnauthorized, setToken, token } from "./api.js";
import { errorText } from "./dom.js";
import * as events from "./views/events.js";
import * as grants from "./views/grants.js";
import * as queues from "./views/queues.js";
import * as schema from "./views/schema.js";
import * as signIn from "./views/signin.js";
import * as user from "./views/user.js";

const VIEWS = { user, grants, events, schema, queues };
const main = document.getElementById("view");
let who = null; // whoami of the signed-in token
let life = null; // the current view's timers, ended when another view replaces it
let routing = 0; // counts route() calls: only the newest may draw after waiting for whoami

/** A view's lifetime: timers it starts stop when the operator leaves it. */
function newLife() {
  const timers = new Set();
  let alive = true;
  return {
    alive: () => alive,
    after(ms, fn) {
      const id = setTimeout(() => { timers.delete(id); if (alive) fn(); }, ms);
      timers.add(id);
      return id;
    },
    end() {
      alive = false;
      timers.forEach(clearTimeout);
    },
  };
}

function endView() {
  if (life) life.end();
  life = null;
}

// whoami's `permissions` (when the API sends them) only mark what the role lacks; the API
// still decides every call.
function can(permission) {
  return !who || !Array.isArray(who.permissions) || who.permissions.includes(permission);
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function header(current) {
  document.getElementById("nav").hidden = !who;
  document.getElementById("who").hidden = !who;
  document.getElementById("who-text").textContent = who
    ? `${who.sub} · ${who.role}` + (who.exp ? ` · token expires ${new Date(who.exp * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC` : "")
    : "";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === "#/" + current);
  }
}

function showSignIn(message) {
  endView();
  who = null;
  header(null);
  signIn.render(main, message, (value) => {
    setToken(value);
    route();
  });
}

async function route() {
  endView();
  const mine = ++routing;
  if (!token()) {
    showSignIn(null);
    return;
  }
  if (!who) {
    try {
      const answer = await api("GET", "/api/auth/whoami");
      if (mine !== routing) return;
      who = answer;
    } catch (error) {
      // A 401 has already cleared the token and shown the sign-in with the API's message.
      if (error.status !== 401) {
        clearToken();
        showSignIn("The token could not be checked: " + errorText(error));
      }
      return;
    }
  }
  const [name, ...params] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS[name];
  if (!view) {
    location.replace("#/user"); // fires hashchange, which routes again
    return;
  }
  header(name);
  life = newLife();
  view.render(main, { who, can, params: params.filter(Boolean), life, go });
}

onUnauthorized((error) => showSignIn(error.message));
document.getElementById("sign-out").addEventListener("click", () => {
  clearToken();
  showSignIn(null);
});
window.addEventListener("hashchange", route);
route();
