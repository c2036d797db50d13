// Focus after htmx swaps, so keyboard and screen-reader users know what happened.
// External file: the CSP allows no inline script.
(function () {
  "use strict";

  function focusAfterSwap(event) {
    var target = event.target instanceof Element ? event.target : document;
    var scope = document.getElementById("account") || document.getElementById("main");
    var invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid) {
      invalid.focus();
      return;
    }
    // Success: the submitted form was replaced, so move focus to the updated profile
    // heading; the flash region (aria-live) announces the message.
    var heading = scope && scope.querySelector("#profile h2");
    if (heading && target !== document) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  document.addEventListener("htmx:after:swap", focusAfterSwap);
})();
