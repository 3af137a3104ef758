"""The rating page's Jinja2 templates, kept in the package as strings so an installed wheel
carries them (no package-data setup). Autoescaped: case texts are shown as text, never markup."""

import jinja2

BASE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{% block title %}Rate cases{% endblock %} · llm-assets</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d2733; }
    table { border-collapse: collapse; width: 100%; }
    th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #dde3ea; vertical-align: top; }
    .notice { background: #e7f5ea; border: 1px solid #9bd1a8; padding: .5rem .75rem; margin-bottom: 1rem; }
    .errors { background: #fdecea; border: 1px solid #f1a9a0; padding: .5rem .75rem; margin-bottom: 1rem; }
    .case-text { background: #f5f7fa; border-left: 4px solid #7f8c9a; padding: .75rem; white-space: pre-wrap; }
    fieldset { border: 1px solid #dde3ea; margin: 1rem 0; }
    .muted { color: #5f6b7a; font-size: .9em; }
    .review { background: #fff4d6; border: 1px solid #e6c46a; padding: 0 .3rem; font-size: .8em; }
    button { padding: .4rem 1rem; }
  </style>
</head>
<body>
  <header><a href="/">Unrated samples</a>{% if analyst is defined and analyst %}
    <span class="muted" id="signed-in">· signed in as <strong>{{ analyst }}</strong> · <a href="/logout">log out</a></span>{% endif %}</header>
  {% block body %}{% endblock %}
</body>
</html>
"""

LIST = """{% extends "base.html" %}
{% block body %}
<h1>Unrated samples</h1>
{% if rated %}<p class="notice" id="notice">Rating of {{ rated }} sent.</p>{% endif %}
{% if error %}<p class="errors">{{ error }}</p>{% endif %}
<p class="muted">{{ samples|length }} of {{ total }} samples wait for a rating{% if day %} on {{ day }}{% endif %}.</p>
{% if samples %}
<table id="samples">
  <thead><tr><th>case</th><th>day</th><th>label</th><th>confidence</th><th>severity</th><th>summary</th></tr></thead>
  <tbody>
  {% for s in samples %}
    <tr>
      <td><a class="rate-link" href="/cases/{{ s.event_id|urlencode }}">{{ s.event_id }}</a>{% if s.review %}
        <span class="review" title="one analyst disputed a confident answer: a second opinion decides">review</span>{% endif %}</td>
      <td>{{ s.event_date }}</td><td>{{ s.label }}</td><td>{{ "%.2f"|format(s.confidence) }}</td>
      <td>{{ s.severity }}</td><td>{{ s.summary|truncate(90) }}</td>
    </tr>
  {% endfor %}
  </tbody>
</table>
{% else %}
<p id="empty">Nothing to rate.</p>
{% endif %}
{% endblock %}
"""

CASE = """{% extends "base.html" %}
{% block title %}{{ s.event_id }}{% endblock %}
{% block body %}
<h1>Case {{ s.event_id }}</h1>
<p class="muted">{{ s.event_date }} · {{ s.source_system }} · partner {{ s.partner_id }} · model {{ s.model_version }}
 · route {{ s.route }}</p>
{% if errors %}<div class="errors" id="errors"><ul>{% for e in errors %}<li>{{ e }}</li>{% endfor %}</ul></div>{% endif %}
<h2>The case (redacted)</h2>
<div class="case-text" id="case-text">{{ s.text }}</div>
<h2>What the model proposed</h2>
<table>
  <tr><th>label</th><td id="label">{{ s.label }}</td></tr>
  <tr><th>confidence</th><td id="confidence">{{ "%.2f"|format(s.confidence) }}</td></tr>
  <tr><th>severity</th><td>{{ s.severity }}</td></tr>
  <tr><th>summary</th><td id="summary">{{ s.summary }}</td></tr>
</table>
<form method="post" action="/cases/{{ s.event_id|urlencode }}" id="rating-form">
  <fieldset>
    <legend>Label</legend>
    <label><input type="radio" name="label_correct" value="yes" id="label-correct"
      {% if form.label_correct == "yes" %}checked{% endif %}> correct</label>
    <label><input type="radio" name="label_correct" value="no" id="label-wrong"
      {% if form.label_correct == "no" %}checked{% endif %}> wrong, the right label is</label>
    <select name="correct_label" id="correct-label">
      <option value="">(choose)</option>
      {% for label in labels %}<option value="{{ label }}" {% if form.correct_label == label %}selected{% endif %}>{{ label }}</option>{% endfor %}
    </select>
  </fieldset>
  <fieldset>
    <legend>Proposed actions: tick those you accept</legend>
    {% for a in actions %}
    <div><label><input type="checkbox" name="actions_accepted" value="{{ a.action }}" id="action-{{ loop.index0 }}"
      {% if a.action in form.actions_accepted %}checked{% endif %}>
      <strong>{{ a.action }}</strong> ({{ a.approval_level }}): {{ a.reason }}</label></div>
    {% else %}<p>No action was proposed.</p>{% endfor %}
  </fieldset>
  <input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
  <button type="submit" id="submit">Send rating</button>
</form>
{% endblock %}
"""


LOGIN = """{% extends "base.html" %}
{% block title %}Log in{% endblock %}
{% block body %}
<h1>Log in</h1>
{% if reason %}<p class="errors" id="login-reason">{{ reason }}</p>{% endif %}
<p class="muted">Paste the token <code>llm-assets analysts add NAME</code> printed for you (<code>make dev</code>
prints a local analyst's login link).</p>
<form method="post" action="/login" id="login-form">
  <p><label>Token <input type="password" name="token" id="token" required autocomplete="off"></label></p>
  <button type="submit" id="login">Log in</button>
</form>
{% endblock %}
"""


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.DictLoader({"base.html": BASE, "list.html": LIST, "case.html": CASE,
                                                        "login.html": LOGIN}),
                              autoescape=True, undefined=jinja2.StrictUndefined)
