// Passkeys (WebAuthn) on the security page and the sign-in page: base64url <-> bytes,
// the calls to navigator.credentials, and the JSON endpoints of webapp/web/routes/passkeys.py.
// Loaded only on those two pages. Without WebAuthn the passkey controls stay hidden.
(function () {
  "use strict";

  var CANCELLED = "The passkey request was cancelled or timed out.";
  var FAILED = "Something went wrong with the passkey. Try again.";

  function supported() {
    return Boolean(window.PublicKeyCredential && navigator.credentials && window.fetch);
  }

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    base64 += "====".slice(0, (4 - (base64.length % 4)) % 4);
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      return { type: item.type, id: toBytes(item.id), transports: item.transports };
    });
  }

  function creationOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    options.user = Object.assign({}, json.user, { id: toBytes(json.user.id) });
    options.excludeCredentials = descriptors(json.excludeCredentials);
    return options;
  }

  function requestOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    if (json.allowCredentials) {
      options.allowCredentials = descriptors(json.allowCredentials);
    }
    return options;
  }

  // The credential as JSON, with base64url for every binary field (what py_webauthn reads).
  function credentialJSON(credential) {
    var response = credential.response;
    var json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      json.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      json.response.userHandle = response.userHandle ? toText(response.userHandle) : null;
    }
    return json;
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function postJSON(url, body, fragment) {
    var headers = { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() };
    if (fragment) {
      headers["HX-Request"] = "true";
    }
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: headers,
      body: JSON.stringify(body),
    });
  }

  // A message in the page's flash region (announced: role="status", errors role="alert").
  function showFlash(level, text) {
    var region = document.getElementById("flash");
    if (!region) {
      return;
    }
    var message = document.createElement("p");
    message.className = "flash flash-" + level;
    if (level === "error") {
      message.setAttribute("role", "alert");
    }
    var words = document.createElement("span");
    words.textContent = text;
    message.appendChild(words);
    region.replaceChildren(message);
  }

  // Needs a new password entry first: the server says where to go.
  function followRedirect(response) {
    return response.json().then(function (answer) {
      if (answer.redirect) {
        window.location.assign(answer.redirect);
        return;
      }
      showFlash("error", answer.error || FAILED);
    });
  }

  // Swap an answer's fragments in by id, as htmx would: the panel replaces itself, and a
  // flash marked hx-swap-oob="innerHTML" fills the flash region.
  function swapIn(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    Array.prototype.slice.call(template.content.children).forEach(function (element) {
      var current = element.id ? document.getElementById(element.id) : null;
      if (!current) {
        return;
      }
      if (element.getAttribute("hx-swap-oob") === "innerHTML") {
        current.replaceChildren.apply(current, Array.prototype.slice.call(element.childNodes));
        return;
      }
      current.replaceWith(element);
      if (window.htmx) {
        window.htmx.process(element);
      }
    });
    reveal();
    var invalid = document.querySelector('#passkeys [aria-invalid="true"]');
    var heading = document.getElementById("passkeys-title");
    if (invalid) {
      invalid.focus();
    } else if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  function explain(error) {
    if (error && error.name === "InvalidStateError") {
      return "This device already holds a passkey for your account.";
    }
    if (error && (error.name === "NotAllowedError" || error.name === "AbortError")) {
      return CANCELLED;
    }
    return FAILED;
  }

  function addPasskey(form) {
    var button = form.querySelector("button");
    var name = form.querySelector('input[name="name"]').value;
    button.disabled = true;
    postJSON("/security/passkeys/options", {})
      .then(function (response) {
        if (response.status === 403) {
          return followRedirect(response);
        }
        if (!response.ok) {
          throw new Error("options " + response.status);
        }
        return response.json().then(function (options) {
          return navigator.credentials
            .create({ publicKey: creationOptions(options) })
            .then(function (credential) {
              return postJSON(
                "/security/passkeys",
                { name: name, credential: credentialJSON(credential) },
                true
              );
            })
            .then(function (answer) {
              if (answer.status === 403) {
                return followRedirect(answer);
              }
              return answer.text().then(swapIn);
            });
        });
      })
      .catch(function (error) {
        showFlash("error", explain(error));
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  function signIn(container) {
    var button = container.querySelector("button");
    var remember = document.getElementById("login-remember");
    button.disabled = true;
    postJSON("/login/passkey/options", {})
      .then(function (response) {
        if (!response.ok) {
          throw new Error("options " + response.status);
        }
        return response.json();
      })
      .then(function (options) {
        return navigator.credentials.get({ publicKey: requestOptions(options) });
      })
      .then(function (credential) {
        // Signing in (the login page), or confirming who you are (/reauth).
        return postJSON(container.getAttribute("data-action") || "/login/passkey", {
          credential: credentialJSON(credential),
          next: container.getAttribute("data-next") || "/",
          remember: Boolean(remember && remember.checked),
        });
      })
      .then(function (response) {
        return response.json().then(function (answer) {
          if (response.ok && answer.redirect) {
            window.location.assign(answer.redirect);
            return;
          }
          showFlash("error", answer.error || FAILED);
        });
      })
      .catch(function (error) {
        showFlash("error", explain(error));
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  // Show the passkey controls only where they can work.
  function reveal() {
    if (!supported()) {
      return;
    }
    document.querySelectorAll("[data-passkey-add], [data-passkey-signin]").forEach(function (el) {
      el.hidden = false;
    });
    document.querySelectorAll("[data-passkey-unsupported]").forEach(function (el) {
      el.hidden = true;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-passkey-add")) {
      event.preventDefault();
      addPasskey(form);
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var button = target ? target.closest("[data-passkey-signin] button") : null;
    if (button) {
      signIn(button.closest("[data-passkey-signin]"));
    }
  });

  document.addEventListener("htmx:after:swap", reveal);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", reveal);
  } else {
    reveal();
  }
})();
