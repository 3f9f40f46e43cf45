// Shows only the fields of the chosen recipient and kind. Without script every field shows,
// and the server uses the ones that belong to the chosen kind.
(function () {
  'use strict';
  var form = document.querySelector('.send-form');
  if (!form) { return; }
  function update() {
    var target = form.querySelector('input[name="target"]:checked');
    var isUser = !target || target.value === 'user';
    var kindSelect = form.querySelector('select[name="kind"]');
    var kind = isUser ? kindSelect.value : 'custom';
    if (!isUser) { kindSelect.value = 'custom'; }
    kindSelect.disabled = !isUser;
    form.querySelectorAll('[data-kinds]').forEach(function (el) {
      var kinds = el.getAttribute('data-kinds').split(' ');
      el.hidden = kinds.indexOf('target-user') >= 0 ? !isUser : kinds.indexOf(kind) < 0;
    });
  }
  form.addEventListener('change', update);
  form.addEventListener('submit', function () {
    form.querySelector('select[name="kind"]').disabled = false;  // disabled fields are not sent
  });
  update();
}());
