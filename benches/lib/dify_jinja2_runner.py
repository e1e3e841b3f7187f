# Dify's Jinja2 runner around the warm pool benchmark's template (the same script as
# tests/it/warm_pool.rs `dify_cases`): a workload for benches/warm_ab.sh (CODE_FILE=...).
def main(**inputs):
    import jinja2
    from base64 import b64decode
    template = jinja2.Template(b64decode('SGkge3sgbmFtZSB8IHVwcGVyIH19IXslIGZvciBpIGluIGl0ZW1zICV9IHt7IGxvb3AuaW5kZXggfX06e3sgaS5rIH19PXt7IGkudiAqIDEwIH19eyUgZW5kZm9yICV9').decode('utf-8'))
    return template.render(**inputs)
import json
from base64 import b64decode
inputs_obj = json.loads(b64decode('eyJuYW1lIjogIlpvXHUwMGViIiwgIml0ZW1zIjogW3siayI6ICJhIiwgInYiOiAxfSwgeyJrIjogImIiLCAidiI6IDJ9XX0=').decode('utf-8'))
output = main(**inputs_obj)
result = f'''<<RESULT>>{output}<<RESULT>>'''
print(result)
