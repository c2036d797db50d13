// Focus after htmx swaps, so keyboard and screen-reader users know what happened.
// An external file: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  document.addEventListener("htmx:after:swap", function (event) {
    // A rejected form: the server marked the bad fields; start at the first one.
    var invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid) {
      invalid.focus();
      return;
    }
    // A saved form was replaced, taking the focus with it: move it to the updated
    // profile. The flash region (aria-live) announces what changed.
    var heading = document.querySelector("#profile h2");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
      return;
    }
    // Anything else (a failed sign-in): if the clicked button left with the old form,
    // focus fell back to <body>; put it on the new form's first field instead. The
    // form's role="alert" message is announced.
    var active = document.activeElement;
    var swapped = event.target;
    if ((!active || active === document.body) && swapped instanceof Element) {
      var field = swapped.querySelector("input:not([type=hidden])");
      if (field) {
        field.focus();
      }
    }
  });
})();
