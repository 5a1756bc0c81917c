// Apply a filter as soon as one of its menus changes (the form works without this script too).
document.querySelectorAll("#filters select").forEach((el) =>
  el.addEventListener("change", () => document.getElementById("filters").submit())
);
