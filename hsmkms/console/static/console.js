// Progressive enhancement only: every page works without it.
// The deletion form's button stays disabled until the key ID typed matches.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-must-equal]").forEach(function (input) {
    var button = input.form && input.form.querySelector("button[type=submit]");
    if (!button) { return; }
    var update = function () { button.disabled = input.value.trim() !== input.dataset.mustEqual; };
    input.addEventListener("input", update);
    update();
  });
});
